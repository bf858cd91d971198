package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sluicehq/sluice/internal/auth"
	"github.com/sluicehq/sluice/internal/events"
	"github.com/sluicehq/sluice/internal/server"
)

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	a, err := startApp(ctx, "serve", args, getenv, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	return serveHTTP(ctx, a, stdout)
}

// serveHTTP serves /metrics on the metrics address (when set) and the API
// on the configured address until ctx ends, then shuts down in this order,
// within ShutdownTimeout:
//  1. close the Hub: every subscription ends with a "resume with afterSeq"
//     error and, shortly after, its websocket or SSE connection closes;
//  2. http.Server.Shutdown: stop accepting, finish in-flight requests (SSE
//     streams included);
//  3. wait for the websockets, which Shutdown does not track (hijacked);
//  4. return, so deferred closers release Redis and the pools (the Hub's
//     Redis connection is already closed by then).
func serveHTTP(ctx context.Context, a *app, stdout io.Writer) error {
	metrics := a.metrics
	// Streams end with their credential: at expiry, or when their API key
	// is revoked (announced on Redis by whichever process revoked it, and
	// re-read periodically in case an announcement was lost).
	leases := auth.NewLeases(a.client, auth.LeasesOptions{Log: a.log})
	leasesCtx, stopLeases := context.WithCancel(ctx)
	defer stopLeases()
	go leases.Run(leasesCtx)
	hub, err := events.NewHub(a.redis, events.HubOptions{
		Log: a.log, Registerer: metrics.Registry,
		KeyRevoked: leases.Revoked, Resynced: leases.Recheck,
	})
	if err != nil {
		return err
	}
	// Subscribed before the first request, so no subscriber can miss a
	// change committed after it subscribed.
	if err := hub.Start(ctx); err != nil {
		return err
	}
	defer hub.Close()
	h := server.New(server.Deps{
		Config:     a.cfg,
		Log:        a.log,
		Client:     a.client,
		Auth:       a.auth,
		Control:    a.control,
		Runs:       a.runs,
		Webhooks:   a.webhooks,
		Escalation: a.escalation,
		SLA:        a.sla,
		Releases:   a.releases,
		Evals:      a.evals,
		Protection: a.protection,
		RateLimits: a.rateLimits,
		Schedules:  a.schedules,
		Bulk:       a.bulk,
		Retention:  a.retention,
		Triggers:   a.triggers,
		Exports:    a.exports,
		Metrics:    metrics,
		Hub:        hub,
		Leases:     leases,
		Ready:      a.ready,

		Connections: a.conns, // OAuth2 connections: /oauth/callback
	})
	if a.cfg.MetricsAddr != "" {
		// Apart from the API port: series name every tenant's operations,
		// and scrapers need no token.
		mln, err := net.Listen("tcp", a.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen for /metrics (SLUICE_METRICS_ADDR, \"off\" to serve none): %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics.Handler())
		msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
		go func() { _ = msrv.Serve(mln) }()
		defer msrv.Close()
		// Before "listening on", so a caller that waits for that line
		// already knows this one.
		fmt.Fprintf(stdout, "metrics on http://%s\n", mln.Addr())
		a.log.Info("serving metrics", "addr", mln.Addr().String())
	}
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
	// A line on stdout names the address, so callers that asked for port 0
	// learn the real one.
	fmt.Fprintf(stdout, "listening on http://%s\n", ln.Addr())
	a.log.Info("listening", "addr", ln.Addr().String(), "env", a.cfg.Env)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down")
	hub.Close()
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := h.WaitStreams(sctx); err != nil {
		a.log.Warn("websockets still open at shutdown timeout", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
