//go:build unix

package supervisor

import (
	"context"
	"time"
)

// turnEvery is how often the supervisor's main loop turns.
const turnEvery = time.Second

// Run is the supervisor's main loop. Until ctx ends it turns every
// turnEvery: it visits every unit's state, taking each unit's lock, and
// records the turn. A supervisor that is wedged (a lock never released, the
// loop stuck) stops turning, and Alive says so.
func (s *Supervisor) Run(ctx context.Context) {
	t := time.NewTicker(turnEvery)
	defer t.Stop()
	for {
		s.turn()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Supervisor) turn() {
	wedgeHook()
	for _, name := range s.order {
		s.units[name].state()
	}
	s.lastTurn.Store(time.Now().UnixNano())
}

// Alive reports whether the main loop turned within the last three turns
// (the systemd watchdog is fed only while it does).
func (s *Supervisor) Alive() bool {
	last := s.lastTurn.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < 3*turnEvery
}
