//go:build unix

package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/safefile"
)

// Journal steps of an update, written before the step's effect. Recovery
// undoes an update interrupted before stepCommitting and finishes one
// interrupted at or after it.
const (
	stepPulling     = "pulling"      // old runs; new image being pulled
	stepCreatingNew = "creating-new" // old runs; new container being created
	stepStoppingOld = "stopping-old" // old being stopped (kept)
	stepStartingNew = "starting-new" // new being created and started
	stepWaiting     = "waiting"      // new runs; readiness not yet proven
	stepCommitting  = "committing"   // new was ready; old being removed
	stepRollingBack = "rolling-back" // new failed; being removed, old restarted
)

// journal records an update in progress.
type journal struct {
	ID      string    `json:"id"`
	Step    string    `json:"step"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	OldID   string    `json:"old_id"`
	NewID   string    `json:"new_id,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Started time.Time `json:"started"`
}

// unitState is what a unit's driver keeps across agent restarts.
type unitState struct {
	// ConfigImage is the configured image when Current was committed; a
	// changed configuration wins over an older committed update.
	ConfigImage string `json:"config_image,omitempty"`
	// Current is the image the unit runs after the last committed update.
	Current string `json:"current,omitempty"`
	// Previous is the image kept for one rollback.
	Previous string `json:"previous,omitempty"`
	// Bad is a desired image that was rolled back; it is not retried until
	// the desired state names another image.
	Bad       string   `json:"bad,omitempty"`
	BadReason string   `json:"bad_reason,omitempty"`
	Pending   *journal `json:"pending,omitempty"`
}

func loadState(path string) (unitState, error) {
	var st unitState
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read container state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("container state %s is corrupt (remove it to start over): %w", path, err)
	}
	return st, nil
}

// saveState replaces path atomically (safefile: temporary file by
// descriptor, fsync, rename, fsync dir); a symlink in its path is refused.
func saveState(path string, st unitState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := safefile.Mkdir(dir, 0o700, -1); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	if err := safefile.Write(dir, filepath.Base(path), append(b, '\n'), 0o600, -1, -1); err != nil {
		return fmt.Errorf("write container state: %w", err)
	}
	return nil
}

// LoadAgentID returns this installation's agent ID, kept in
// stateDir/agent-id and created on first use. It labels every container the
// agent runs, so it must outlive agent restarts: a container labelled with
// another ID is never adopted nor touched.
func LoadAgentID(stateDir string) (string, error) {
	p := filepath.Join(stateDir, "agent-id")
	b, err := os.ReadFile(p)
	if err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read agent ID: %w", err)
	}
	id := "agent-" + newUpdateID()
	if err := safefile.Mkdir(stateDir, 0o700, -1); err != nil {
		return "", fmt.Errorf("create state dir: %w", err)
	}
	if err := safefile.Write(stateDir, "agent-id", []byte(id+"\n"), 0o600, -1, -1); err != nil {
		return "", fmt.Errorf("write agent ID: %w", err)
	}
	return id, nil
}
