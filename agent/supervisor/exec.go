//go:build unix

package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExecDriver runs a unit as a local process in its own process group.
type ExecDriver struct {
	Command string
	Args    []string
	Dir     string
	// User runs the process as this user (name or numeric uid); empty = the agent's.
	User string
	// StopSignal is sent to the group first.
	StopSignal syscall.Signal
	Log        *slog.Logger
	Output     OutputLimits
	// Stdout, when set, receives the child's output instead of the log
	// (e.g. a size-bounded log file).
	Stdout *os.File
	// Redact removes the unit's secret values from its logged output.
	Redact *Redactor
}

// Start implements Driver.
func (d *ExecDriver) Start(_ context.Context, env []string) (Instance, error) {
	cmd := exec.Command(d.Command, d.Args...)
	cmd.Env = env
	cmd.Dir = d.Dir
	cmd.SysProcAttr = groupAttr()
	if d.User != "" {
		cred, err := lookupCredential(d.User)
		if err != nil {
			return nil, err
		}
		cmd.SysProcAttr.Credential = cred
	}
	p := &process{done: make(chan struct{}), sig: d.StopSignal}
	if p.sig == 0 {
		p.sig = syscall.SIGTERM
	}
	var pipes []*os.File
	if d.Stdout != nil {
		cmd.Stdout, cmd.Stderr = d.Stdout, d.Stdout
	} else {
		out := newOutputLogger(d.Log, d.Output)
		out.redact = d.Redact
		for _, stream := range []string{"stdout", "stderr"} {
			r, w, err := os.Pipe()
			if err != nil {
				closeAll(pipes)
				return nil, fmt.Errorf("pipe: %w", err)
			}
			pipes = append(pipes, r, w)
			p.readEnds = append(p.readEnds, r)
			if stream == "stdout" {
				cmd.Stdout = w
			} else {
				cmd.Stderr = w
			}
			p.readers.Add(1)
			go func() {
				defer p.readers.Done()
				defer r.Close()
				out.copyLines(r, stream)
			}()
		}
	}
	reapMu.Lock()
	err := cmd.Start()
	if err == nil {
		track(cmd.Process.Pid)
	}
	reapMu.Unlock()
	if err != nil {
		// Close the write ends so the readers finish.
		closeAll(pipes)
		p.readers.Wait()
		return nil, fmt.Errorf("start %s: %w", d.Command, err)
	}
	// The child holds the write ends now; ours must close so EOF arrives.
	for i := 1; i < len(pipes); i += 2 {
		pipes[i].Close()
	}
	p.cmd = cmd
	p.pid = cmd.Process.Pid
	go p.wait()
	return p, nil
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// Owner resolves a unit's user, by name or numeric uid, to its uid and gid
// (-1, -1 for "": the agent's own). Files written for the unit are owned by it.
func Owner(name string) (uid, gid int, err error) {
	if name == "" {
		return -1, -1, nil
	}
	u, err := lookupUser(name)
	if err != nil {
		return 0, 0, err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("user %q: %w (create it or change the unit's user)", name, err)
		}
	}
	return u, nil
}

// lookupCredential resolves a user name or uid to the process credential,
// supplementary groups included.
func lookupCredential(name string) (*syscall.Credential, error) {
	u, err := lookupUser(name)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				cred.Groups = append(cred.Groups, uint32(n))
			}
		}
	}
	return cred, nil
}

// process is a running ExecDriver child.
type process struct {
	cmd     *exec.Cmd
	pid     int
	sig     syscall.Signal
	readers sync.WaitGroup
	// readEnds are closed if a process outside the group keeps the pipes open.
	readEnds []*os.File
	done     chan struct{}
	exit     ExitStatus
}

func (p *process) wait() {
	err := p.cmd.Wait()
	untrack(p.pid)
	// Whatever the leader left behind in its group goes with it: no orphaned
	// grandchildren. The group ID cannot be reused while members remain.
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
	// Reap the killed orphans we inherited as subreaper (bounded wait).
	for i := 0; i < 100 && reapOrphans(p.pid) > 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	reapOrphans(p.pid)
	drained := make(chan struct{})
	go func() { p.readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		// A process that left the group still holds the output pipes.
		closeAll(p.readEnds)
		<-drained
	}
	p.exit = exitStatus(p.cmd.ProcessState, err)
	close(p.done)
}

func exitStatus(ps *os.ProcessState, err error) ExitStatus {
	if ps == nil {
		return ExitStatus{Code: -1, Err: err}
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ExitStatus{Code: -1, Signal: unix.SignalName(ws.Signal())}
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return ExitStatus{Code: ps.ExitCode(), Err: err}
	}
	return ExitStatus{Code: ps.ExitCode()}
}

func (p *process) ID() string            { return "pid " + strconv.Itoa(p.pid) }
func (p *process) PID() int              { return p.pid }
func (p *process) Done() <-chan struct{} { return p.done }
func (p *process) Exit() ExitStatus      { return p.exit }
func (p *process) signalGroup(s syscall.Signal) error {
	err := syscall.Kill(-p.pid, s)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Stop signals the process group, waits up to grace, then SIGKILLs the group.
func (p *process) Stop(ctx context.Context, grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.signalGroup(p.sig); err != nil {
		return fmt.Errorf("signal group %d: %w", p.pid, err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	if err := p.signalGroup(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill group %d: %w", p.pid, err)
	}
	<-p.done
	return nil
}
