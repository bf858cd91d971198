package ratelimit

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the limiter's Prometheus metrics, recorded in workers.
type Metrics struct {
	checks    *prometheus.CounterVec
	waits     *prometheus.CounterVec
	cooldowns *prometheus.CounterVec
	errors    *prometheus.CounterVec
	reloads   prometheus.Counter
	checkTime prometheus.Histogram
}

// NewMetrics registers the limiter's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_rate_limit_checks_total",
			Help: "Outbound calls checked against rate limits, by result (allowed, wait).",
		}, []string{"result"}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_rate_limit_waits_total",
			Help: "Step attempts deferred by a rate limit, by cause (rate, concurrency, cooldown); none spends a retry.",
		}, []string{"cause"}),
		cooldowns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_rate_limit_cooldowns_total",
			Help: "Cooldowns set because an upstream answered 429 or 503 asking to wait, by status.",
		}, []string{"status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_rate_limit_errors_total",
			Help: "Limiter failures by operation; the call went on unlimited.",
		}, []string{"op"}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_rate_limit_policy_reloads_total",
			Help: "Tenant policy sets read from Postgres (first use or a changed version).",
		}),
		checkTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sluice_rate_limit_check_seconds",
			Help:    "Time of a call's limiter check (one Redis round trip unless policies reload).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
	}
	reg.MustRegister(m.checks, m.waits, m.cooldowns, m.errors, m.reloads, m.checkTime)
	return m
}

func (m *Metrics) allowed() {
	if m != nil {
		m.checks.WithLabelValues("allowed").Inc()
	}
}

func (m *Metrics) waited(cause string) {
	if m != nil {
		m.checks.WithLabelValues("wait").Inc()
		m.waits.WithLabelValues(cause).Inc()
	}
}

func (m *Metrics) cooldown(status int) {
	if m != nil {
		m.cooldowns.WithLabelValues(strconv.Itoa(status)).Inc()
	}
}

func (m *Metrics) failed(op string) {
	if m != nil {
		m.errors.WithLabelValues(op).Inc()
	}
}

func (m *Metrics) reload() {
	if m != nil {
		m.reloads.Inc()
	}
}

func (m *Metrics) checked(d time.Duration) {
	if m != nil {
		m.checkTime.Observe(d.Seconds())
	}
}
