//go:build unix

package workspace

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// StateFileName is the workspace state's file name under the agent's state dir.
const StateFileName = "workspace-state.json"

// MaxRecoveryRestarts bounds the runtime restarts made for token recovery
// between two registrations, across agent restarts: the platform caps live
// tokens at 50 per workspace (docs/platform-contract.md §2), and a loop of
// restarts must not become a loop of mints.
const MaxRecoveryRestarts = 3

// PersistedState is what the agent remembers about its workspace across its
// own restarts. It holds no secret.
type PersistedState struct {
	WorkspaceID string `json:"workspace_id"`
	// Removed is set, and synced to disk, the moment the tenant shows the
	// workspace removed: the runtime of a removed workspace never starts
	// again, because a tokenless register of it mints a fresh token.
	Removed   bool      `json:"removed,omitempty"`
	RemovedAt time.Time `json:"removed_at,omitzero"`
	// RecoveryRestarts counts the runtime restarts made for token recovery
	// since the last registration.
	RecoveryRestarts int `json:"recovery_restarts,omitempty"`
	// LastRegistered is when the agent last saw a registration of its own start.
	LastRegistered time.Time `json:"last_registered,omitzero"`
	// SourceToken is the SHA-256 (hex) of the secret source's token the
	// agent last wrote to .auth_token: the file is written again only when
	// the source holds another one (an operator's rotation), never over a
	// token the platform issued to the runtime.
	SourceToken string `json:"source_token_sha256,omitempty"`
}

// State is the persisted workspace state, in a 0600 file of the agent's
// state dir (root's own directory: no other user writes there).
type State struct {
	path string
	mu   sync.Mutex
	st   PersistedState
}

// OpenState reads the state at path for workspace id. A missing file is a
// fresh state; a file for another workspace ID is ignored (the host was
// reused for a new workspace), and an unreadable one is an error that names
// the path, so a removed workspace never starts by accident.
func OpenState(path, id string) (*State, error) {
	s := &State{path: path, st: PersistedState{WorkspaceID: id}}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("workspace state %s: %w", path, err)
	}
	var st PersistedState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("workspace state %s: %w (delete the file only if the workspace was not removed)", path, err)
	}
	if st.WorkspaceID == id {
		s.st = st
	}
	return s, nil
}

// Get returns a copy of the state.
func (s *State) Get() PersistedState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Removed reports whether the workspace was found removed, now or before
// an agent restart.
func (s *State) Removed() bool { return s.Get().Removed }

// MarkRemoved persists the removal (synced) before it returns.
func (s *State) MarkRemoved(at time.Time) error {
	return s.update(func(st *PersistedState) {
		if !st.Removed {
			st.Removed, st.RemovedAt = true, at
		}
	})
}

// TakeRecoveryRestart counts one token-recovery restart and reports
// whether it is allowed (at most MaxRecoveryRestarts between
// registrations). The count is persisted before the restart happens.
func (s *State) TakeRecoveryRestart() (bool, error) {
	ok := false
	err := s.update(func(st *PersistedState) {
		if st.RecoveryRestarts < MaxRecoveryRestarts {
			st.RecoveryRestarts++
			ok = true
		}
	})
	return ok && err == nil, err
}

// Registered records a registration of this start: recovery is allowed again.
func (s *State) Registered(at time.Time) error {
	return s.update(func(st *PersistedState) { st.RecoveryRestarts, st.LastRegistered = 0, at })
}

// SourceTokenWritten records the hash of the source token just written.
func (s *State) SourceTokenWritten(sum string) error {
	return s.update(func(st *PersistedState) { st.SourceToken = sum })
}

func (s *State) update(f func(*PersistedState)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.st
	f(&next)
	if next == s.st {
		return nil
	}
	if err := writeSynced(s.path, next); err != nil {
		return err
	}
	s.st = next
	return nil
}

// writeSynced writes v as JSON to path atomically: temp file, fsync,
// rename, fsync of the directory.
func writeSynced(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("workspace state %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+StateFileName+".*")
	if err != nil {
		return fmt.Errorf("workspace state %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("workspace state %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
