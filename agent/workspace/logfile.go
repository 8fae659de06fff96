//go:build unix

package workspace

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/safefile"
	"github.com/molecule-ai/molecule-agent/agent/supervisor"
)

// Log file defaults.
const (
	DefaultLogPath     = "/var/log/molecule-runtime.log"
	DefaultLogMaxBytes = 10 << 20
	DefaultLogKeep     = 3
	// maxLineBytes bounds what a line callback sees; longer lines are cut.
	maxLineBytes = 8 << 10
)

// RotatingFile is an io.Writer appending to a file that it rotates once it
// would grow past MaxBytes: path → path.1 → … → path.<Keep>, the oldest
// dropped. The disk it uses is bounded by about (Keep+1)×MaxBytes.
type RotatingFile struct {
	path     string
	maxBytes int64
	keep     int
	uid, gid int

	mu     sync.Mutex
	f      *os.File // nil after Close, or after a failed rotation until reopened
	size   int64
	closed bool
}

// OpenRotating opens (appends to) path, 0640, created for uid:gid (-1 keeps
// the agent's), by descriptor (safefile): a symlink in the path or at the
// file, or a dir owned by another user, is refused. maxBytes <= 0 and keep
// <= 0 take the defaults.
func OpenRotating(path string, maxBytes int64, keep, uid, gid int) (*RotatingFile, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultLogMaxBytes
	}
	if keep <= 0 {
		keep = DefaultLogKeep
	}
	r := &RotatingFile{path: path, maxBytes: maxBytes, keep: keep, uid: uid, gid: gid}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *RotatingFile) open() error {
	d, err := safefile.OpenDir(filepath.Dir(r.path), r.uid)
	if err != nil {
		return fmt.Errorf("runtime log: %w", err)
	}
	defer d.Close()
	f, err := d.OpenAppend(filepath.Base(r.path), 0o640, r.uid, r.gid)
	if err != nil {
		return fmt.Errorf("runtime log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("runtime log %s: %w", r.path, err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

// Write appends p, rotating first when p would take the file past MaxBytes.
// A single write larger than MaxBytes is cut to MaxBytes.
func (r *RotatingFile) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, os.ErrClosed
	}
	if r.f == nil { // a rotation failed: try again rather than lose the log for good
		if err := r.open(); err != nil {
			return 0, err
		}
	}
	n := len(p)
	if int64(len(p)) > r.maxBytes {
		p = p[:r.maxBytes]
	}
	if r.size > 0 && r.size+int64(len(p)) > r.maxBytes {
		if err := r.rotate(); err != nil {
			return 0, err
		}
	}
	w, err := r.f.Write(p)
	r.size += int64(w)
	if err != nil {
		return w, err
	}
	return n, nil
}

func (r *RotatingFile) rotate() error {
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("runtime log %s: %w", r.path, err)
	}
	r.f = nil
	d, err := safefile.OpenDir(filepath.Dir(r.path), r.uid)
	if err != nil {
		return fmt.Errorf("rotate runtime log: %w", err)
	}
	defer d.Close()
	base := filepath.Base(r.path)
	_ = d.Remove(base + "." + strconv.Itoa(r.keep))
	for i := r.keep - 1; i >= 1; i-- {
		_ = d.Rename(base+"."+strconv.Itoa(i), base+"."+strconv.Itoa(i+1))
	}
	if err := d.Rename(base, base+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rotate runtime log %s: %w", r.path, err)
	}
	return r.open()
}

// Close closes the file.
func (r *RotatingFile) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// Sink is a pipe whose write end is given to the runtime as stdout and
// stderr (supervisor.ExecDriver.Stdout): a plain *os.File cannot rotate, so
// one goroutine copies what the runtime writes into a writer (the
// RotatingFile) and passes every line to a callback (the Checker watching
// for the register result). The same Sink serves every restart.
type Sink struct {
	w      *os.File
	r      *os.File
	done   chan struct{}
	closed sync.Once

	mu        sync.Mutex
	redactors []*supervisor.Redactor
}

// AddRedactor makes the Sink remove r's values from what it writes to the
// log file (the runtime's token, should it ever print it; the values the
// daemon resolved for the unit). The line callback sees the raw line.
func (s *Sink) AddRedactor(r *supervisor.Redactor) {
	if r == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.redactors = append(s.redactors, r)
}

// tokenPrefix is the real runtime's "Saved workspace auth token
// (prefix=<8 chars>…)": the prefix of a token the agent did not know yet
// (docs/platform-contract.md §2).
var tokenPrefix = regexp.MustCompile(`(auth token \(prefix=)[^)\s…]*`)

func (s *Sink) redact(chunk []byte, partial bool) []byte {
	chunk = tokenPrefix.ReplaceAll(chunk, []byte("${1}[redacted]"))
	s.mu.Lock()
	rs := s.redactors
	s.mu.Unlock()
	if len(rs) == 0 {
		return chunk
	}
	str := string(chunk)
	for _, r := range rs {
		str = r.Redact(str, partial)
	}
	return []byte(str)
}

// NewSink starts copying into dst; onLine (may be nil) gets each line,
// without its newline, cut at 8 KiB, and must not keep it.
func NewSink(dst io.Writer, onLine func(line []byte)) (*Sink, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("runtime output pipe: %w", err)
	}
	s := &Sink{w: w, r: r, done: make(chan struct{})}
	go s.copy(dst, onLine)
	return s, nil
}

// File is the write end to give the child as stdout and stderr.
func (s *Sink) File() *os.File { return s.w }

func (s *Sink) copy(dst io.Writer, onLine func([]byte)) {
	defer close(s.done)
	br := bufio.NewReaderSize(s.r, maxLineBytes)
	skipping := false
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			_, _ = dst.Write(s.redact(line, errors.Is(err, bufio.ErrBufferFull)))
			if onLine != nil && !skipping {
				l := line
				if l[len(l)-1] == '\n' {
					l = l[:len(l)-1]
				}
				onLine(l)
			}
		}
		// A line longer than the buffer is seen once, cut; its rest is only copied.
		skipping = errors.Is(err, bufio.ErrBufferFull)
		if err != nil && !skipping {
			return
		}
	}
}

// Close closes the write end and waits (at most wait) for the copy to drain
// what the runtime wrote; a grandchild still holding the pipe is cut off.
func (s *Sink) Close(wait time.Duration) {
	s.closed.Do(func() {
		_ = s.w.Close()
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-s.done:
		case <-t.C:
			_ = s.r.Close()
			<-s.done
		}
		_ = s.r.Close()
	})
}
