//go:build pprof

package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
)

// Built only with -tags pprof (README "Performance": where the memory
// goes): with MOLECULE_AGENT_PROFILE_DIR set, SIGUSR2 makes the agent write
// heap.pprof, goroutine.txt and metrics.txt (runtime/metrics) there. The
// product binary has none of this.
func init() {
	dir := os.Getenv("MOLECULE_AGENT_PROFILE_DIR")
	if dir == "" {
		return
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGUSR2)
	go func() {
		for range c {
			if err := writeProfiles(dir); err != nil {
				fmt.Fprintln(os.Stderr, "profile:", err)
			}
		}
	}()
}

func writeProfiles(dir string) error {
	runtime.GC()
	// metrics.txt last: its appearance tells the bench the rest is written.
	for _, p := range []struct {
		name  string
		write func(*os.File) error
	}{
		{"heap.pprof", func(f *os.File) error { return pprof.Lookup("heap").WriteTo(f, 0) }},
		{"goroutine.txt", func(f *os.File) error { return pprof.Lookup("goroutine").WriteTo(f, 1) }},
		{"metrics.txt", writeMetrics},
	} {
		name, write := p.name, p.write
		f, err := os.Create(filepath.Join(dir, name+".tmp"))
		if err != nil {
			return err
		}
		err = write(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func writeMetrics(f *os.File) error {
	descs := metrics.All()
	samples := make([]metrics.Sample, len(descs))
	for i := range descs {
		samples[i].Name = descs[i].Name
	}
	metrics.Read(samples)
	for _, s := range samples {
		switch s.Value.Kind() {
		case metrics.KindUint64:
			fmt.Fprintf(f, "%s %d\n", s.Name, s.Value.Uint64())
		case metrics.KindFloat64:
			fmt.Fprintf(f, "%s %g\n", s.Name, s.Value.Float64())
		}
	}
	return nil
}
