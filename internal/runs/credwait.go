package runs

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/connection"
	"github.com/sluicehq/sluice/ent/credential"
	"github.com/sluicehq/sluice/ent/credentialwait"
	"github.com/sluicehq/sluice/ent/run"
	"github.com/sluicehq/sluice/ent/stepattempt"
	"github.com/sluicehq/sluice/ent/steprun"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/eventtype"
	"github.com/sluicehq/sluice/internal/steps"
	"github.com/sluicehq/sluice/internal/store"
	"github.com/sluicehq/sluice/internal/viewer"
)

// Steps that wait for a connection. An http or llm step whose credential is
// an oauth2 connection that needs a person (reauthorization_required,
// pending_authorization, disabled) does not run and does not fail: it
// waits, with a credential_waits row naming the connection, its attempt due
// at the wait's deadline (so the reconciler finds the timeout whatever
// happened to the queue), and the run waits with reason `credential`. The
// same happens to an attempt whose token request found the grant refused
// (steps.CredentialClass): its next attempt waits.
//
// When the connection is authorized again, WakeCredentialWaits makes the
// waiting attempts due now; the connections sweep calls it too for every
// connection that is usable while rows still wait, so a lost wake-up is
// found. A claim then finds the connection usable and runs the step from
// there. Past the deadline (SLUICE_CREDENTIAL_WAIT_TIMEOUT, 24h by
// default) the step fails with class `credential`.

// ConnectionTokens gives steps the tokens of a connection
// (connections.Service).
type ConnectionTokens interface {
	Source(tenantID, credentialID string) steps.TokenSource
}

// DefaultCredentialWaitTimeout is how long a step waits for its connection.
const DefaultCredentialWaitTimeout = 24 * time.Hour

// credentialWaits is the run state machine's side of connections.
type credentialWaits struct {
	tokens  ConnectionTokens
	timeout time.Duration
	// plain remembers credentials (tenant, environment, name) that are not
	// oauth2, to spare their steps the lookup; a credential's type never
	// changes (one deleted and created again with another type is found
	// by the finish path, credentialFailed).
	plain      sync.Map
	plainCount atomic.Int64
}

// maxPlainCredentials bounds credentialWaits.plain.
const maxPlainCredentials = 100_000

// SetConnections registers the connections service and the credential wait
// timeout (zero: DefaultCredentialWaitTimeout).
func (e *Service) SetConnections(tokens ConnectionTokens, timeout time.Duration) {
	if timeout <= 0 {
		timeout = DefaultCredentialWaitTimeout
	}
	e.creds = &credentialWaits{tokens: tokens, timeout: timeout}
}

// connectionOf returns the credential id and connection status of the
// run's credential name, or "" when it is not a connection.
func (s *runState) connectionOf(ctx context.Context, name string) (credID, status string, err error) {
	return s.connectionLookup(ctx, name, false)
}

// connectionLookup is connectionOf; oauth2 says the credential was just
// opened as oauth2, so a cached "not oauth2" (a credential deleted and
// created again under its name) is stale.
func (s *runState) connectionLookup(ctx context.Context, name string, oauth2 bool) (credID, status string, err error) {
	key := s.run.TenantID + "\x00" + s.run.EnvironmentID + "\x00" + name
	if oauth2 {
		s.e.creds.plain.Delete(key)
	} else if _, ok := s.e.creds.plain.Load(key); ok {
		return "", "", nil
	}
	cred, err := s.c.Credential.Query().Where(credential.EnvironmentID(s.run.EnvironmentID), credential.Name(name)).
		Select(credential.FieldID, credential.FieldType).Only(ctx)
	if ent.IsNotFound(err) {
		return "", "", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read credential %s: %w", name, err)
	}
	if cred.Type != credential.TypeOauth2 {
		if s.e.creds.plainCount.Add(1) > maxPlainCredentials {
			s.e.creds.plain.Clear() // bounded: start over
			s.e.creds.plainCount.Store(0)
		}
		s.e.creds.plain.Store(key, true)
		return "", "", nil
	}
	conn, err := s.c.Connection.Query().Where(connection.CredentialID(cred.ID)).Select(connection.FieldStatus).Only(ctx)
	if ent.IsNotFound(err) {
		return "", "", nil // an oauth2 credential from before connections
	}
	if err != nil {
		return "", "", fmt.Errorf("read connection of %s: %w", name, err)
	}
	return cred.ID, string(conn.Status), nil
}

// needsPerson mirrors connections.NeedsPerson (runs does not import it).
func needsPerson(status string) bool {
	switch connection.Status(status) {
	case connection.StatusPendingAuthorization, connection.StatusReauthorizationRequired, connection.StatusDisabled:
		return true
	}
	return false
}

// credentialGate runs before a queued or waiting http or llm step is
// claimed: a step whose connection needs a person waits (or keeps waiting,
// or times out), and handled is true; otherwise a wait it had is resolved
// and the claim goes on. credID is the step's connection, if any.
func (s *runState) credentialGate(ctx context.Context, step *definition.Step, sr *ent.StepRun) (credID string, handled bool, err error) {
	if s.e.creds == nil || step.Credential == "" || (step.Type != definition.StepHTTP && step.Type != definition.StepLLM) || s.run.Mode == run.ModeSandbox {
		return "", false, nil
	}
	credID, status, err := s.connectionOf(ctx, step.Credential)
	if err != nil || credID == "" {
		return "", false, err
	}
	var w *ent.CredentialWait
	if sr.Status == steprun.StatusWaiting {
		// Only a waiting step has an open wait (beginCredentialWait).
		w, err = s.c.CredentialWait.Query().Where(credentialwait.StepRunID(sr.ID), credentialwait.StatusEQ(credentialwait.StatusWaiting)).
			Order(ent.Desc(credentialwait.FieldCreatedAt)).First(ctx)
		if err != nil && !ent.IsNotFound(err) {
			return "", false, fmt.Errorf("credential wait of step %s: %w", step.ID, err)
		}
	}
	if w != nil && w.Attempt != sr.Attempts {
		w = nil // an earlier attempt's, left by a resume
	}
	if !needsPerson(status) {
		if w != nil {
			if err := s.c.CredentialWait.UpdateOneID(w.ID).SetStatus(credentialwait.StatusResumed).SetResolvedAt(s.now).Exec(ctx); err != nil {
				return "", false, err
			}
		}
		return credID, false, nil
	}
	if w == nil {
		return credID, true, s.beginCredentialWait(ctx, step, sr, credID, false)
	}
	if !s.now.Before(w.ExpiresAt) {
		return credID, true, s.timeoutCredentialWait(ctx, step, sr, w)
	}
	// Woken while the connection still needs a person: wait on.
	return credID, true, s.wakeWaitAt(ctx, sr, w.ExpiresAt)
}

// attachConnection gives an oauth2 credential its connection's tokens.
func (s *runState) attachConnection(ctx context.Context, j *job, credID string) error {
	if s.e.creds == nil || j.credential == nil || j.credential.Type != string(credential.TypeOauth2) {
		return nil
	}
	if credID == "" {
		var err error
		if credID, _, err = s.connectionLookup(ctx, j.step.Credential, true); err != nil || credID == "" {
			return err
		}
	}
	j.credential.Tokens = s.e.creds.tokens.Source(s.run.TenantID, credID)
	return nil
}

// beginCredentialWait makes the step wait for its connection: its current
// attempt (or, after a failed one, its next) is due at the deadline.
func (s *runState) beginCredentialWait(ctx context.Context, step *definition.Step, sr *ent.StepRun, credID string, afterFailure bool) error {
	s.markStarted()
	expires := s.now.Add(s.e.creds.timeout)
	if afterFailure {
		if err := s.scheduleAttemptAs(ctx, sr, expires, steprun.StatusWaiting); err != nil {
			return err
		}
	} else {
		if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusWaiting)); err != nil {
			return err
		}
		if err := s.wakeWaitAt(ctx, s.steps[sr.StepID], expires); err != nil {
			return err
		}
	}
	sr = s.steps[sr.StepID]
	if err := s.c.CredentialWait.Create().SetRunID(s.run.ID).SetStepID(step.ID).SetStepRunID(sr.ID).SetAttempt(sr.Attempts).
		SetCredentialID(credID).SetExpiresAt(expires).Exec(ctx); err != nil {
		return fmt.Errorf("create credential wait: %w", err)
	}
	data := map[string]any{"reason": "credential", "credential": step.Credential, "credentialID": credID, "expiresAt": expires.Format(time.RFC3339Nano)}
	s.emit(eventtype.StepWaiting, step.ID, sr.Attempts, data)
	if err := s.settle(ctx); err != nil {
		return err
	}
	// The run's run.waiting (if it now waits) says why.
	for _, ev := range s.events {
		if ev.Type == string(eventtype.RunWaiting) && ev.Data == nil {
			ev.Data = map[string]any{"reason": "credential", "credential": step.Credential, "stepID": step.ID}
		}
	}
	return nil
}

// timeoutCredentialWait fails a step whose connection was not authorized
// again in time, with class credential, and its run.
func (s *runState) timeoutCredentialWait(ctx context.Context, step *definition.Step, sr *ent.StepRun, w *ent.CredentialWait) error {
	if err := s.c.CredentialWait.UpdateOneID(w.ID).SetStatus(credentialwait.StatusExpired).SetResolvedAt(s.now).Exec(ctx); err != nil {
		return err
	}
	msg := fmt.Sprintf("connection %q was not authorized again within %s", step.Credential, s.e.creds.timeout)
	class := string(steps.CredentialClass)
	attemptID := *sr.CurrentAttemptID
	if err := s.setAttempt(ctx, attemptID, changeAttempt().SetStatus(stepattempt.StatusFailed).SetErrorClass(class).SetErrorMessage(msg).SetFinishedAt(s.now), 1); err != nil {
		return err
	}
	if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(class).SetErrorMessage(msg).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
		return err
	}
	s.emit(eventtype.StepFailed, sr.StepID, sr.Attempts, map[string]any{"class": class, "message": msg, "attemptID": attemptID})
	return s.failRun(ctx, sr.StepID, class, msg)
}

// credentialFailed handles an attempt that failed because its connection
// needs a person (finishAttempt): the step waits for it instead of failing,
// its next attempt due at the wait's deadline.
func (s *runState) credentialFailed(ctx context.Context, j *job, sr *ent.StepRun) error {
	credID := ""
	if s.e.creds != nil {
		var err error
		if credID, _, err = s.connectionLookup(ctx, j.step.Credential, true); err != nil {
			return err
		}
	}
	if credID == "" || s.terminal() {
		// Not a connection any more: fail as any permanent error would.
		msg := "the step's connection needs to be authorized again"
		if err := s.setStep(ctx, sr, changeStep().SetStatus(steprun.StatusFailed).SetErrorClass(string(steps.CredentialClass)).SetErrorMessage(msg).SetFinishedAt(s.now).ClearReadyAt()); err != nil {
			return err
		}
		return s.failRun(ctx, j.step.ID, string(steps.CredentialClass), msg)
	}
	return s.beginCredentialWait(ctx, j.step, sr, credID, true)
}

// WakeCredentialWaits makes the waiting attempts of the steps waiting for
// credential credentialID due now, so they run again (connections calls it
// once the connection is authorized again, and its sweep for a lost
// wake-up). Waits of runs that ended or moved on are closed. It returns how
// many attempts it woke.
func (e *Service) WakeCredentialWaits(ctx context.Context, tenantID, credentialID string) (int, error) {
	ctx = viewer.SystemContext(ctx, tenantID)
	var waits []*ent.CredentialWait
	err := store.InTenant(ctx, e.client, func(ctx context.Context) error {
		var err error
		waits, err = ent.FromContext(ctx).CredentialWait.Query().
			Where(credentialwait.CredentialID(credentialID), credentialwait.StatusEQ(credentialwait.StatusWaiting)).
			Order(ent.Asc(credentialwait.FieldRunID)).Limit(MaxWaitsPerEvent).All(ctx)
		return err
	})
	if err != nil {
		return 0, err
	}
	woken := 0
	for _, w := range waits {
		err := e.stepTx(ctx, w.RunID, func(ctx context.Context) error {
			c := ent.FromContext(ctx)
			s, err := e.lockRunSteps(ctx, c, w.RunID, w.StepID)
			if errs.CodeOf(err) == errs.NotFound {
				return nil
			}
			if err != nil {
				return err
			}
			sr := s.steps[w.StepID]
			if s.terminal() || sr == nil || sr.Status != steprun.StatusWaiting || sr.Attempts != w.Attempt || sr.CurrentAttemptID == nil {
				return c.CredentialWait.UpdateOneID(w.ID).SetStatus(credentialwait.StatusCancelled).SetResolvedAt(s.now).Exec(ctx)
			}
			if err := s.wakeWaitAt(ctx, sr, s.now); err != nil {
				return err
			}
			woken++
			return s.flush(ctx)
		})
		if err != nil {
			return woken, err
		}
	}
	return woken, nil
}

// attachItemConnection gives a map item's oauth2 credential its
// connection's tokens, like attachConnection for a step. (An item whose
// connection needs a person fails like any failed item: items do not wait
// for connections.)
func (e *Service) attachItemConnection(ctx context.Context, c *ent.Client, r *ent.Run, j *job) error {
	if e.creds == nil || j.credential == nil || j.credential.Type != string(credential.TypeOauth2) {
		return nil
	}
	st := &runState{e: e, c: c, run: r}
	credID, _, err := st.connectionLookup(ctx, j.step.Credential, true)
	if err != nil || credID == "" {
		return err
	}
	j.credential.Tokens = e.creds.tokens.Source(r.TenantID, credID)
	return nil
}
