package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Caps on every string of a registration and a heartbeat, in bytes, and on
// their lists. The control plane refuses a request over a cap, or with a
// string that is not valid UTF-8 or holds a control character, with 400
// naming the field. Free text (a unit's or an update's detail, the
// interruption) may hold tabs and newlines, nothing else below U+0020. The
// client cuts and cleans free text before sending (ClampHeartbeat), so an
// agent never loses its heartbeat to a long error message.
const (
	MaxIDBytes           = 128   // org, workspace, boot_id, machine_id, channel, role
	MaxAgentVersionBytes = 64    // agent_version
	MaxHostnameBytes     = 255   // hostname
	MaxTokenBytes        = 256   // enrollment_token, host_token
	MaxPKCS7Bytes        = 16384 // identity_pkcs7 (base64, may hold newlines)
	MaxDocumentBytes     = 8192  // identity_document (JSON, may hold newlines)
	MaxUnits             = 256   // units
	MaxUnitNameBytes     = 128   // units[].name, updates[].unit
	MaxStateBytes        = 32    // units[].state, updates[].phase
	MaxImageBytes        = 512   // units[].image
	MaxDigestBytes       = 128   // units[].image_digest, updates[].digest
	MaxDetailBytes       = 1024  // units[].detail, updates[].detail, interruption
	MaxTunnelIDBytes     = 64    // tunnel.id
	MaxBootSteps         = 64    // boot
	MaxBootStepBytes     = 64    // boot[].step
	MaxUpdates           = 256   // updates
)

// FieldError is a request refused for one field.
type FieldError struct {
	Field string // the JSON path, e.g. units[3].name
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// text kinds: what a field may hold besides printable characters.
type text int

const (
	plain     text = iota // no control character
	multiline             // tabs and newlines (free text)
	encoded               // CR and LF (base64 or JSON from IMDS)
)

// checkString refuses s when it is longer than limit bytes, not valid
// UTF-8, or holds a control character its kind does not allow.
func checkString(field, s string, limit int, kind text) *FieldError {
	if len(s) > limit {
		return &FieldError{field, "longer than " + strconv.Itoa(limit) + " bytes"}
	}
	if !utf8.ValidString(s) {
		return &FieldError{field, "not valid UTF-8"}
	}
	for i, r := range s {
		if !isControl(r) {
			continue
		}
		if (kind == multiline && (r == '\t' || r == '\n')) || (kind == encoded && (r == '\r' || r == '\n')) {
			continue
		}
		return &FieldError{field, fmt.Sprintf("control character %U at byte %d", r, i)}
	}
	return nil
}

func isControl(r rune) bool { return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' }

type check struct {
	field string
	value string
	limit int
	kind  text
}

func firstBad(cs []check) *FieldError {
	for _, c := range cs {
		if e := checkString(c.field, c.value, c.limit, c.kind); e != nil {
			return e
		}
	}
	return nil
}

// ValidateRegisterStrings checks every string of a registration against
// its cap (the server checks formats, such as the boot ID's, after it).
func ValidateRegisterStrings(r RegisterRequest) *FieldError {
	return firstBad([]check{
		{"identity_pkcs7", r.IdentityPKCS7, MaxPKCS7Bytes, encoded},
		{"identity_document", r.IdentityDocument, MaxDocumentBytes, encoded},
		{"enrollment_token", r.EnrollmentToken, MaxTokenBytes, plain},
		{"machine_id", r.MachineID, MaxIDBytes, plain},
		{"host_token", r.HostToken, MaxTokenBytes, plain},
		{"role", r.Role, MaxIDBytes, plain},
		{"org", r.Org, MaxIDBytes, plain},
		{"workspace", r.Workspace, MaxIDBytes, plain},
		{"agent_version", r.AgentVersion, MaxAgentVersionBytes, plain},
		{"boot_id", r.BootID, MaxIDBytes, plain},
		{"hostname", r.Hostname, MaxHostnameBytes, plain},
	})
}

// ValidateHeartbeat checks every string and list of a heartbeat against
// its cap.
func ValidateHeartbeat(h HeartbeatRequest) *FieldError {
	switch {
	case len(h.Units) > MaxUnits:
		return &FieldError{"units", "at most " + strconv.Itoa(MaxUnits)}
	case len(h.Boot) > MaxBootSteps:
		return &FieldError{"boot", "at most " + strconv.Itoa(MaxBootSteps)}
	case len(h.Updates) > MaxUpdates:
		return &FieldError{"updates", "at most " + strconv.Itoa(MaxUpdates)}
	}
	cs := []check{
		{"agent_version", h.AgentVersion, MaxAgentVersionBytes, plain},
		{"boot_id", h.BootID, MaxIDBytes, plain},
		{"interruption", h.Interruption, MaxDetailBytes, multiline},
	}
	if h.Tunnel != nil {
		cs = append(cs, check{"tunnel.id", h.Tunnel.ID, MaxTunnelIDBytes, plain})
	}
	for i, u := range h.Units {
		p := "units[" + strconv.Itoa(i) + "]."
		cs = append(cs, check{p + "name", u.Name, MaxUnitNameBytes, plain}, check{p + "state", u.State, MaxStateBytes, plain},
			check{p + "image", u.Image, MaxImageBytes, plain}, check{p + "image_digest", u.ImageDigest, MaxDigestBytes, plain},
			check{p + "detail", u.Detail, MaxDetailBytes, multiline})
	}
	for i, b := range h.Boot {
		cs = append(cs, check{"boot[" + strconv.Itoa(i) + "].step", b.Step, MaxBootStepBytes, plain})
	}
	for i, u := range h.Updates {
		p := "updates[" + strconv.Itoa(i) + "]."
		cs = append(cs, check{p + "unit", u.Unit, MaxUnitNameBytes, plain}, check{p + "digest", u.Digest, MaxDigestBytes, plain},
			check{p + "phase", u.Phase, MaxStateBytes, plain}, check{p + "detail", u.Detail, MaxDetailBytes, multiline})
	}
	return firstBad(cs)
}

// ValidateEnrollmentToken checks the bounds of an enrollment token request
// (after the server defaulted Uses to 1).
func ValidateEnrollmentToken(r EnrollmentTokenRequest) *FieldError {
	if r.Uses < 1 || r.Uses > MaxEnrollmentUses {
		return &FieldError{"uses", "between 1 and " + strconv.Itoa(MaxEnrollmentUses)}
	}
	return firstBad([]check{
		{"workspace", r.Workspace, MaxIDBytes, plain},
		{"channel", r.Channel, MaxIDBytes, plain},
		{"machine_id", r.MachineID, MaxIDBytes, plain},
	})
}

// CleanText makes free text fit a multiline field of limit bytes: invalid
// UTF-8 becomes U+FFFD, control characters other than tab and newline
// become spaces, and the result is cut at a character boundary.
func CleanText(s string, limit int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if isControl(r) && r != '\t' && r != '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) <= limit {
		return s
	}
	s = s[:limit]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// ClampHeartbeat returns h with its free text cleaned and cut to the caps
// (CleanText). Identifiers are left as they are: a bad one is a bug to
// surface, not text to mend.
func ClampHeartbeat(h HeartbeatRequest) HeartbeatRequest {
	h.Interruption = CleanText(h.Interruption, MaxDetailBytes)
	if len(h.Units) > 0 {
		units := make([]UnitStatus, len(h.Units))
		for i, u := range h.Units {
			u.Detail = CleanText(u.Detail, MaxDetailBytes)
			units[i] = u
		}
		h.Units = units
	}
	if len(h.Updates) > 0 {
		ups := make([]UpdateStatus, len(h.Updates))
		for i, u := range h.Updates {
			u.Detail = CleanText(u.Detail, MaxDetailBytes)
			ups[i] = u
		}
		h.Updates = ups
	}
	return h
}

// InvalidUTF8Field returns the JSON path (e.g. units[0].detail) of the first
// string in body that is not valid UTF-8, "body" when the invalid bytes are
// not in a string, or "" when body is valid UTF-8. (Decoding JSON would
// silently turn invalid bytes into U+FFFD, so the raw body is checked.)
func InvalidUTF8Field(body []byte) string {
	bad := firstInvalid(body)
	if bad < 0 {
		return ""
	}
	type frame struct {
		arr     bool
		idx     int
		key     string
		wantKey bool
	}
	var stack []frame
	path := func() string {
		var b strings.Builder
		for i, f := range stack {
			switch {
			case f.arr:
				b.WriteString("[" + strconv.Itoa(f.idx) + "]")
			case i > 0:
				b.WriteString("." + f.key)
			default:
				b.WriteString(f.key)
			}
		}
		return b.String()
	}
	advance := func() {
		if n := len(stack); n > 0 {
			if stack[n-1].arr {
				stack[n-1].idx++
			} else {
				stack[n-1].wantKey = true
			}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err != nil {
			return "body"
		}
		end := int(dec.InputOffset())
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{':
				stack = append(stack, frame{wantKey: true})
			case '[':
				stack = append(stack, frame{arr: true})
			default:
				stack = stack[:len(stack)-1]
				advance()
			}
			continue
		}
		if n := len(stack); n > 0 && !stack[n-1].arr && stack[n-1].wantKey {
			stack[n-1].key, stack[n-1].wantKey = fmt.Sprint(tok), false
			if end > bad {
				return path()
			}
			continue
		}
		if end > bad {
			if p := path(); p != "" {
				return p
			}
			return "body"
		}
		advance()
	}
}

func firstInvalid(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}
