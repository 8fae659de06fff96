//go:build unix

package supervisor

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"
)

// OutputLimits bound what one unit's output may cost the agent.
type OutputLimits struct {
	LinesPerSecond int
	Burst          int
	MaxLineBytes   int
}

// outputLogger turns a child's output into log records, one per line, with a
// token bucket so a child printing thousands of lines a second costs the agent
// a fixed amount of memory and a bounded amount of log. Dropped lines are
// counted and reported.
type outputLogger struct {
	log    *slog.Logger
	limits OutputLimits
	redact *Redactor
	now    func() time.Time

	mu         sync.Mutex
	tokens     float64
	last       time.Time
	lastReport time.Time
	dropped    int64
	total      int64
}

func newOutputLogger(log *slog.Logger, l OutputLimits) *outputLogger {
	if l.MaxLineBytes <= 0 {
		l.MaxLineBytes = 4096
	}
	if l.Burst <= 0 {
		l.Burst = 1000
	}
	if l.LinesPerSecond <= 0 {
		l.LinesPerSecond = 200
	}
	return &outputLogger{log: log, limits: l, now: time.Now, tokens: float64(l.Burst)}
}

// copyLines reads r until EOF, logging each line under stream. Memory use is
// bounded by MaxLineBytes whatever the child writes.
func (o *outputLogger) copyLines(r io.Reader, stream string) {
	br := bufio.NewReaderSize(r, o.limits.MaxLineBytes)
	for {
		line, isPrefix, err := br.ReadLine()
		if len(line) > 0 || (err == nil && !isPrefix) {
			o.emit(stream, line, isPrefix)
		}
		if isPrefix {
			// Discard the rest of an over-long line.
			for isPrefix && err == nil {
				_, isPrefix, err = br.ReadLine()
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrClosedPipe) {
				o.log.Debug("output read ended", "stream", stream, "err", err)
			}
			o.flushDropped()
			return
		}
	}
}

func (o *outputLogger) emit(stream string, line []byte, truncated bool) {
	o.mu.Lock()
	o.total++
	now := o.now()
	if !o.last.IsZero() {
		o.tokens += now.Sub(o.last).Seconds() * float64(o.limits.LinesPerSecond)
		o.tokens = min(o.tokens, float64(o.limits.Burst))
	}
	o.last = now
	if o.tokens < 1 {
		o.dropped++
		o.mu.Unlock()
		return
	}
	o.tokens--
	var dropped int64
	// Say what was dropped at most once a second.
	if o.dropped > 0 && now.Sub(o.lastReport) >= time.Second {
		dropped, o.dropped, o.lastReport = o.dropped, 0, now
	}
	o.mu.Unlock()
	if dropped > 0 {
		o.log.Warn("unit output rate-limited", "dropped_lines", dropped)
	}
	attrs := []any{"stream", stream}
	if truncated {
		attrs = append(attrs, "truncated", true)
	}
	o.log.Info(o.redact.Redact(string(line), truncated), attrs...)
}

func (o *outputLogger) flushDropped() {
	o.mu.Lock()
	dropped := o.dropped
	o.dropped = 0
	o.mu.Unlock()
	if dropped > 0 {
		o.log.Warn("unit output rate-limited", "dropped_lines", dropped)
	}
}

// Lines returns how many lines the unit has written in all.
func (o *outputLogger) Lines() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.total
}
