//go:build unix

package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
)

// Handler wraps h so that every record's message and attribute values
// (strings, errors, Stringers, and anything else by its JSON form) pass
// through r: the agent's own logs never show a value r knows.
func (r *Redactor) Handler(h slog.Handler) slog.Handler {
	return &redactHandler{h: h, r: r}
}

type redactHandler struct {
	h slog.Handler
	r *Redactor
}

func (rh *redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return rh.h.Enabled(ctx, l) }

func (rh *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, rh.r.Redact(rec.Message, false), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(rh.attr(a))
		return true
	})
	return rh.h.Handle(ctx, out)
}

func (rh *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = rh.attr(a)
	}
	return &redactHandler{h: rh.h.WithAttrs(red), r: rh.r}
}

func (rh *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: rh.h.WithGroup(name), r: rh.r}
}

func (rh *redactHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, rh.r.Redact(v.String(), false))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = rh.attr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, rh.r.Redact(x.Error(), false))
		case fmt.Stringer:
			return slog.String(a.Key, rh.r.Redact(x.String(), false))
		default:
			b, err := json.Marshal(x)
			if err != nil {
				return slog.String(a.Key, rh.r.Redact(fmt.Sprint(x), false))
			}
			if red := rh.r.Redact(string(b), false); red != string(b) {
				if json.Valid([]byte(red)) {
					return slog.Any(a.Key, json.RawMessage(red))
				}
				return slog.String(a.Key, red)
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
