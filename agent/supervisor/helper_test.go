//go:build unix

package supervisor

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The test binary doubles as the child processes: with SUPERVISOR_HELPER set
// it behaves as the named helper instead of running tests.
func TestMain(m *testing.M) {
	if h := os.Getenv("SUPERVISOR_HELPER"); h != "" {
		os.Exit(helper(h, os.Args[len(os.Args)-1]))
	}
	if err := BecomeSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "subreaper:", err)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m)
}

func helper(name, arg string) int {
	note := func(s string) {
		if f := os.Getenv("NOTE_FILE"); f != "" {
			fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
			if err == nil {
				fmt.Fprintf(fh, "%s %d\n", s, time.Now().UnixNano())
				fh.Close()
			}
		}
	}
	switch name {
	case "exit":
		n, _ := strconv.Atoi(arg)
		return n
	case "sleep-exit": // run for arg, then exit 1
		d, _ := time.ParseDuration(arg)
		time.Sleep(d)
		return 1
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Hour)
	case "grandchildren": // leader with two grandchildren in its group
		for range 2 {
			c := exec.Command("/bin/sleep", "1000")
			if err := c.Start(); err != nil {
				return 2
			}
			fmt.Println("grandchild", c.Process.Pid)
		}
		time.Sleep(time.Hour)
	case "listen-after": // listen on arg (addr) after 300ms, note it, note SIGTERM
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		note("start " + os.Getenv("NAME"))
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("tcp", arg)
		if err != nil {
			return 3
		}
		note("listening " + os.Getenv("NAME"))
		<-sig
		note("stopped " + os.Getenv("NAME"))
		ln.Close()
		return 0
	case "flood":
		line := []byte(strings.Repeat("x", 120) + "\n")
		for {
			if _, err := os.Stdout.Write(line); err != nil {
				return 0
			}
		}
	}
	return 99
}

// helperCmd returns an ExecDriver-ready command line for a helper.
func helperDriver(t *testing.T, name, arg string) *ExecDriver {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &ExecDriver{Command: exe, Args: []string{"-test.run=^$", arg}, Log: testLog(t),
		StopSignal: syscall.SIGTERM}
}

func helperEnv(name string, extra ...string) []string {
	return append([]string{"SUPERVISOR_HELPER=" + name, "PATH=/usr/bin:/bin"}, extra...)
}
