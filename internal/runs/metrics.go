package runs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the run state machine's Prometheus metrics. They are recorded where work
// happens: step metrics in workers, run outcomes wherever a run finishes.
type Metrics struct {
	runsFinished *prometheus.CounterVec
	stepDuration *prometheus.HistogramVec
	tokens       *prometheus.CounterVec
	cost         *prometheus.CounterVec
	held         *prometheus.CounterVec
	released     prometheus.Counter
}

// NewMetrics registers the run state machine's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_runs_finished_total",
			Help: "Runs that reached a terminal status, by status and failure class.",
		}, []string{"status", "class"}),
		stepDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sluice_step_attempt_duration_seconds",
			Help:    "Step attempt duration by step type and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}, []string{"type", "outcome"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_model_tokens_total",
			Help: "Model tokens by provider, model and direction (input, output).",
		}, []string{"provider", "model", "direction"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_model_cost_micro_usd_total",
			Help: "Model cost in micro-USD by provider and model.",
		}, []string{"provider", "model"}),
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_dispatch_held_steps_total",
			Help: "Ready steps held in Postgres by fair dispatch, by where: admission (the tenant's share of the queue, or its cap, was full when the step became ready) or claim (its running steps were at its cap).",
		}, []string{"at"}),
		released: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_dispatch_released_steps_total",
			Help: "Held steps released to the queue.",
		}),
	}
	reg.MustRegister(m.runsFinished, m.stepDuration, m.tokens, m.cost, m.held, m.released)
	return m
}

func (m *Metrics) runFinished(status, class string) {
	if m != nil {
		m.runsFinished.WithLabelValues(status, class).Inc()
	}
}

func (m *Metrics) attempt(typ, outcome string, seconds float64) {
	if m != nil {
		m.stepDuration.WithLabelValues(typ, outcome).Observe(seconds)
	}
}

func (m *Metrics) modelCall(provider, model string, in, out, cost int64) {
	if m != nil {
		m.tokens.WithLabelValues(provider, model, "input").Add(float64(in))
		m.tokens.WithLabelValues(provider, model, "output").Add(float64(out))
		m.cost.WithLabelValues(provider, model).Add(float64(cost))
	}
}

func (m *Metrics) heldSteps(n int, reason string) {
	if m != nil {
		m.held.WithLabelValues(reason).Add(float64(n))
	}
}

func (m *Metrics) releasedSteps(n int) {
	if m != nil {
		m.released.Add(float64(n))
	}
}
