package evals

// Verdicts of an example, as stored (evaluationexample.Verdict).
const (
	VerdictImproved     = "IMPROVED"
	VerdictRegressed    = "REGRESSED"
	VerdictUnchanged    = "UNCHANGED"
	VerdictError        = "ERROR"
	VerdictInconclusive = "INCONCLUSIVE"
)
