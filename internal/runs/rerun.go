package runs

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/ent/workflowversion"
	"github.com/sluicehq/sluice/internal/definition"
	"github.com/sluicehq/sluice/internal/errs"
)

// This file holds what resume and replay take besides the run: another
// version (versionID) and a JSON merge patch of the input (inputPatch),
// and the audit context a caller acting for someone else adds (bulk).

// ResumeInput is what resumeRun takes.
type ResumeInput struct {
	ID string
	// VersionID, when set, moves the run to another published version of
	// its workflow before it continues; the version must have the run's
	// steps (same ids and types).
	VersionID *string
	// InputPatch, when set, is a JSON merge patch (RFC 7396) of the run's
	// input; the result must match the input schema of the version the run
	// continues on.
	InputPatch map[string]any
	// AuditMeta is added to the run.resume audit entry (a bulk operation
	// names itself there).
	AuditMeta map[string]any
	// Path prefixes the field paths of VALIDATION errors (none if empty:
	// resumeRun's arguments).
	Path string
}

func joinPath(prefix, field string) string {
	if prefix == "" {
		return field
	}
	return prefix + "." + field
}

// MergePatch applies a JSON merge patch (RFC 7396) to doc and returns the
// result; doc is not changed. A null in the patch removes the member.
func MergePatch(doc, patch map[string]any) map[string]any {
	out := maps.Clone(doc)
	if out == nil {
		out = map[string]any{}
	}
	for k, pv := range patch {
		if pv == nil {
			delete(out, k)
			continue
		}
		if pm, ok := pv.(map[string]any); ok {
			dm, _ := out[k].(map[string]any)
			out[k] = MergePatch(dm, pm)
			continue
		}
		out[k] = pv
	}
	return out
}

// normalizeJSON round-trips v through JSON with numbers kept exact, so a
// patch decoded by GraphQL (json.Number, int64, float64) and a stored input
// compare and validate alike.
func normalizeJSON(v map[string]any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var out map[string]any
	if err := d.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

// publishedVersionOf returns the published version id of workflowID, or a
// NOT_FOUND or VALIDATION error at path.
func publishedVersionOf(ctx context.Context, c *ent.Client, id, workflowID, path string) (*ent.WorkflowVersion, error) {
	wv, err := c.WorkflowVersion.Get(ctx, id)
	if ent.IsNotFound(err) {
		return nil, errs.NotFoundf("workflow version", id)
	}
	if err != nil {
		return nil, err
	}
	if wv.WorkflowID != workflowID {
		return nil, errs.Invalid(path, "belongs to another workflow")
	}
	if wv.Status != workflowversion.StatusPublished {
		return nil, errs.Invalid(path, "is a draft; publish it first")
	}
	return wv, nil
}

// sameSteps refuses to resume a run on a version whose steps are not the
// run's: completed outputs are kept by step id, and a step that changed its
// type or that the run never had cannot be continued.
func sameSteps(from, to *definition.Definition, path string) error {
	have := map[string]string{}
	for _, st := range from.Steps {
		have[st.ID] = st.Type
	}
	var missing, added, retyped []string
	for _, st := range to.Steps {
		t, ok := have[st.ID]
		switch {
		case !ok:
			added = append(added, st.ID)
		case t != st.Type:
			retyped = append(retyped, st.ID)
		}
		delete(have, st.ID)
	}
	for id := range have {
		missing = append(missing, id)
	}
	if len(missing)+len(added)+len(retyped) == 0 {
		return nil
	}
	slices.Sort(missing)
	var why []string
	if len(missing) > 0 {
		why = append(why, "lacks steps "+strings.Join(missing, ", "))
	}
	if len(added) > 0 {
		why = append(why, "adds steps "+strings.Join(added, ", "))
	}
	if len(retyped) > 0 {
		why = append(why, "changes the type of steps "+strings.Join(retyped, ", "))
	}
	return errs.Invalid(path, "a run resumes on a version with the same steps (ids and types); this version %s (replay the run on it instead)", strings.Join(why, "; "))
}

// patchedInput applies patch to the stored input of run runID and checks
// the result against def's input schema, reporting at path.
func patchedInput(ctx context.Context, runID string, patch map[string]any, def *definition.Definition, path string) (map[string]any, error) {
	input, err := runInput(ctx, runID)
	if err != nil {
		return nil, fmt.Errorf("read input of %s: %w", runID, err)
	}
	p, err := normalizeJSON(patch)
	if err != nil {
		return nil, errs.Invalid(path, "is not JSON: %v", err)
	}
	out := MergePatch(input, p)
	if err := def.ValidateInput(out); err != nil {
		return nil, errs.Invalid(path, "the patched input does not match the version's input schema: %v", err)
	}
	return out, nil
}
