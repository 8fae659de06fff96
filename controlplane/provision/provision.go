// Package provision holds the control plane's backends for creating and
// removing what a tenant or workspace runs on: EC2 instances and SSM
// parameters (aws-sdk-go-v2), and the Cloudflare Tunnel and proxied CNAME
// in front of a tenant (cloudflare-go/v6).
//
// Every call is idempotent, so a provisioning job or delete cascade killed
// at any step can run the step again: a launch carries an EC2 ClientToken
// derived from the caller's key and is first looked up by it, a tunnel is
// found by name before it is created, a CNAME is upserted, a parameter is
// created only if absent (Ensure) or overwritten (Set), and a delete of
// something already gone succeeds. Throttling and 5xx answers are retried
// with full-jitter backoff (controlplane/api/backoff), honouring
// Cloudflare's Retry-After up to the policy's ceiling; the SDKs' own retries
// are turned off so one policy governs. An IAM or API-token refusal is
// ErrDenied and names the permission to grant.
//
// No secret (tunnel secret or token, parameter value) is logged or put in
// an error: values travel as secret.Secret.
//
// The org job of issue 17 maps onto it step by step: 1 Parameters.Ensure
// (generated secrets) and Parameters.Set (URLs, IDs) under the org's
// prefix; 2 Cloudflare.EnsureTunnel("molecule-"+slug), then Set of the
// tunnel token; 3 Cloudflare.ConfigureIngress; 4 Cloudflare.UpsertCNAME;
// 5 Instances.Launch with a key stored with the job. The delete cascade:
// Instances.List and Terminate, Cloudflare.DeleteCNAME, DeleteTunnel (with
// the stored tunnel ID), Parameters.DeleteAll. Sweeps use Instances.List,
// Instances.Console, Cloudflare.Status, Cloudflare.Tunnels,
// Cloudflare.Records and Parameters.Names.
package provision

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/molecule-ai/molecule-agent/controlplane/api/backoff"
)

// ErrDenied is matched (errors.Is) by every error caused by a missing IAM
// permission or API-token scope; retrying cannot help.
var ErrDenied = errors.New("permission denied")

// ErrNotFound is matched by errors about a resource that does not exist
// where the call needs it to.
var ErrNotFound = errors.New("not found")

// Retry is the backoff policy for throttled and failed calls.
type Retry struct {
	// Attempts is the number of tries in all (default 6).
	Attempts int
	// Min and Max bound the full-jitter backoff (default 200ms and 20s);
	// Max also caps a server's Retry-After.
	Min, Max time.Duration
}

// DefaultRetry is the policy used when none is given.
var DefaultRetry = Retry{Attempts: 6, Min: 200 * time.Millisecond, Max: 20 * time.Second}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetry.Attempts
	}
	if r.Min <= 0 {
		r.Min = DefaultRetry.Min
	}
	if r.Max < r.Min {
		r.Max = max(DefaultRetry.Max, r.Min)
	}
	return r
}

// verdict says whether a failed call may be tried again, and after how
// long at least (a server's Retry-After; 0 for the policy's backoff).
type verdict struct {
	retry bool
	after time.Duration
}

// do calls f until it succeeds, fails for good, or the attempts run out.
// classify judges each error.
func (r Retry) do(ctx context.Context, log *slog.Logger, op string, classify func(error) verdict, f func(context.Context) error) error {
	r = r.withDefaults()
	var err error
	for attempt := 0; attempt < r.Attempts; attempt++ {
		if err = f(ctx); err == nil {
			return nil
		}
		v := classify(err)
		if !v.retry || ctx.Err() != nil || attempt == r.Attempts-1 {
			return err
		}
		wait := backoff.Policy{Min: r.Min, Max: r.Max}.Delay(attempt+1, 0)
		if v.after > 0 {
			wait = min(max(wait, v.after), r.Max)
		}
		log.Debug("retrying", "op", op, "attempt", attempt+1, "wait", wait, "err", err)
		if !backoff.Wait(ctx, wait) {
			return errors.Join(err, ctx.Err())
		}
	}
	return err
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
