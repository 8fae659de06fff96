package heartbeat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/molecule-ai/molecule-agent/agent/secretstore"
)

// StateFile is the name of the registration file under the state dir.
const StateFile = "controlplane.json"

// state is what the agent keeps across restarts: its host ID and token, for
// which control plane and which boot.
type state struct {
	URL       string `json:"control_plane_url"`
	HostID    string `json:"host_id"`
	HostToken string `json:"host_token"`
	BootID    string `json:"boot_id"`
}

func loadState(dir string) (state, secretstore.Secret, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return state{}, secretstore.Secret{}, nil
	}
	if err != nil {
		return state{}, secretstore.Secret{}, fmt.Errorf("read registration: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return state{}, secretstore.Secret{}, fmt.Errorf("registration file %s is corrupt (delete it to register again): %w", filepath.Join(dir, StateFile), err)
	}
	tok := secretstore.New(s.HostToken)
	s.HostToken = ""
	return s, tok, nil
}

// saveState writes the registration atomically with mode 0600: a temporary
// file in the same directory, fsync, rename, fsync the directory.
func saveState(dir string, s state, tok secretstore.Secret) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	s.HostToken = tok.Reveal()
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, StateFile+".*.tmp")
	if err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }()
	if err := f.Chmod(0o600); err != nil {
		_ = f.Close()
		return fmt.Errorf("save registration: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return fmt.Errorf("save registration: %w", err)
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return fmt.Errorf("save registration: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, StateFile)); err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
