package graph

import (
	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/graph/model"
	"github.com/sluicehq/sluice/internal/triggers"
	spec "github.com/sluicehq/sluice/internal/triggerspec"
)

func verificationInput(in *model.TriggerVerificationInput) triggers.VerificationInput {
	if in == nil {
		return triggers.VerificationInput{}
	}
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	v := spec.Verification{Scheme: in.Scheme, Header: str(in.Header), Algorithm: str(in.Algorithm),
		Encoding: str(in.Encoding), Prefix: str(in.Prefix), Signed: str(in.Signed), TimestampHeader: str(in.TimestampHeader)}
	if in.ToleranceSeconds != nil {
		v.ToleranceSeconds = *in.ToleranceSeconds
		if v.ToleranceSeconds == 0 {
			v.ToleranceSeconds = -1 // refused: 0 would read as the default
		}
	}
	return triggers.VerificationInput{Verification: v, Secret: in.Secret}
}

func dedupInput(in *model.TriggerDedupInput) *spec.Dedup {
	if in == nil {
		return nil
	}
	d := &spec.Dedup{}
	if in.Key != nil {
		d.Key = *in.Key
	}
	if in.WindowSeconds != nil {
		d.WindowSeconds = int64(*in.WindowSeconds)
		if d.WindowSeconds == 0 {
			d.WindowSeconds = -1
		}
	}
	return d
}

func rateLimitInput(in *model.TriggerRateLimitInput) *spec.RateLimit {
	if in == nil {
		return nil
	}
	r := &spec.RateLimit{}
	if in.PerSecond != nil {
		r.PerSecond = *in.PerSecond
		if r.PerSecond == 0 {
			r.PerSecond = -1
		}
	}
	if in.Burst != nil {
		r.Burst = *in.Burst
		if r.Burst == 0 {
			r.Burst = -1
		}
	}
	return r
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func triggerVerification(t *ent.Trigger) *model.TriggerVerification {
	v := t.Verification
	tol := v.ToleranceSeconds
	if tol == 0 {
		tol = 300
	}
	return &model.TriggerVerification{Scheme: model.TriggerScheme(v.Scheme), Header: optional(v.Header),
		Algorithm: optional(v.Algorithm), Encoding: optional(v.Encoding), Prefix: optional(v.Prefix),
		Signed: optional(v.Signed), TimestampHeader: optional(v.TimestampHeader), ToleranceSeconds: tol}
}

func triggerDedup(t *ent.Trigger) *model.TriggerDedup {
	w := int(t.Dedup.WindowSeconds)
	if w == 0 {
		w = 86400
	}
	return &model.TriggerDedup{Key: optional(t.Dedup.Key), WindowSeconds: w}
}

func triggerInputMapping(t *ent.Trigger) any {
	switch {
	case t.InputMapping.Expr != "":
		return t.InputMapping.Expr
	case len(t.InputMapping.Fields) > 0:
		out := make(map[string]any, len(t.InputMapping.Fields))
		for k, v := range t.InputMapping.Fields {
			out[k] = v
		}
		return out
	}
	return nil
}
