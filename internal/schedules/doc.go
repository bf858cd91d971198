// Package schedules owns durable schedules: a workflow started in an
// environment at the slots of a cron expression (5 or 6 fields, read in a
// time zone) or of a fixed interval. It creates, changes, pauses and
// deletes schedules (the control side, audited), computes their slots
// (spec.go: daylight saving handled here, robfig/cron only parses), and
// runs the ticker in the workers: a singleton loop that, for each schedule
// due, starts the slot's run through the run state machine and advances
// the schedule in one transaction. A run's idempotency key is
// sched:<schedule id>:<RFC 3339 slot>, so a slot starts at most one run
// whatever the number of workers, a crash or a Redis wipe. Runs a schedule
// starts have createdBy "schedule:<id>". It is a neighbour of the state
// machine: it starts and cancels runs through runs.Service, and the state
// machine never imports it.
package schedules
