// Package cli is the sluice command: it parses a command line and runs the
// API server, the worker, the development process, migrations, tenant
// provisioning, token minting or the benchmark. cmd/sluice only wires a
// process to Run; tests run it in-process.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
)

const usage = `Usage: sluice <command> [flags]

Commands:
  serve                       run the GraphQL API server
  worker                      run step execution (asynq), timers and the reconciler
  dev                         run everything in one process for development
                              (migrations applied, demo tenant seeded, token printed)
  migrate up|down|status      apply, roll back or list database migrations
  migrate diff NAME           write the migration that brings migrations/ up to ent/schema
  migrate sum                 rewrite migrations/atlas.sum after editing a hand-written migration
  tenant create --slug S --name N
  tenant apply -f FILE        create or update a tenant from a manifest (idempotent)
  tenant list
  token mint --tenant S --role R [--subject X] [--ttl D]
  bench [--smoke] [--workers N] [--concurrency N] [--in-process] [--only S,...]
                              measure Sluice on this machine against its targets
                              (a fresh database and Redis databases of its own;
                              see BENCHMARKS.md and "sluice bench -h")
  help                        show this help

Configuration is read from environment variables; see README.md.
`

// Run is the whole program: args are the command line without the program
// name, getenv the environment, stdout and stderr its output. It returns
// when the command is done or, for serve, worker and dev, when ctx ends.
// serve and worker keep no process-wide state (no package variables,
// signal handlers, default registries or os.Exit), so several can run in
// one process.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "worker":
		return runWorker(ctx, rest, getenv, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, rest, getenv, stdout)
	case "tenant":
		return runTenant(ctx, rest, getenv, stdout)
	case "token":
		return runToken(ctx, rest, getenv, stdout)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
