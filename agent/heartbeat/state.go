//go:build unix

package heartbeat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/molecule-ai/molecule-agent/agent/safefile"
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

// saveState writes the registration atomically with mode 0600 (safefile:
// temporary file by descriptor, fsync, rename, fsync the directory). A
// symlink in the state dir's path is refused.
func saveState(dir string, s state, tok secretstore.Secret) error {
	if err := safefile.Mkdir(dir, 0o700, -1); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	s.HostToken = tok.Reveal()
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := safefile.Write(dir, StateFile, b, 0o600, -1, -1); err != nil {
		return fmt.Errorf("save registration: %w", err)
	}
	return nil
}
