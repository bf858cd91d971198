package control

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/ent"
	"github.com/sluicehq/sluice/internal/errs"
	"github.com/sluicehq/sluice/internal/viewer"
)

// DeployGate guards deploys and promotions into protected environments
// (internal/protection implements it): a freeze window or a missing
// evaluation refuses them, and an environment that requires approvals
// refuses a direct deploy (requestDeployment waits for them instead).
type DeployGate interface {
	CheckDeploy(ctx context.Context, c *ent.Client, v *viewer.Viewer, wv *ent.WorkflowVersion, env *ent.Environment, versionPath, envPath string) error
}

// SetGate installs the gate of protected environments; nil lets every
// deploy through (no environment is protected).
func (s *Service) SetGate(g DeployGate) { s.gate = g }

// RequiresApprovals reports whether deploys and releases into env wait for
// approvals: editors may then ask for them even in production.
func RequiresApprovals(env *ent.Environment) bool {
	return env != nil && env.Protection != nil && env.Protection.RequiredApprovals > 0
}

// CheckFreeze refuses a change of what env runs while one of its freeze
// windows is in force (CONFLICT naming the window and when it ends).
// Deploys, promotions, requests and their approval, release creation and a
// release's promotion check it; rollbacks do not (they restore what ran).
func CheckFreeze(env *ent.Environment, now time.Time, path string) error {
	f, ok := env.Protection.FrozenAt(now)
	if !ok {
		return nil
	}
	ends := f.Ends.UTC().Format(time.RFC3339)
	msg := fmt.Sprintf("environment %s is in its %s: no deploys until %s", env.Name, f.Describe(), ends)
	return &errs.Error{Code: errs.Conflict, Message: msg, Problems: []errs.Problem{{Path: path, Message: "frozen until " + ends}}}
}
