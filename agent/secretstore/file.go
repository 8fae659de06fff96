//go:build unix

package secretstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// maxFileSize bounds a secrets file.
const maxFileSize = 1 << 20

// File reads secrets from a flat YAML or JSON map of name to value, for
// hosts off EC2. The file is re-read on every Fetch, so editing it rotates.
type File struct {
	path string
}

var _ Source = (*File)(nil)

// NewFile returns a source reading path.
func NewFile(path string) *File { return &File{path: path} }

// Location returns the file's path.
func (f *File) Location() string { return f.path }

// Fetch reads and parses the file.
func (f *File) Fetch(context.Context) (map[string]Secret, error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, &FetchError{Location: f.path, Kind: ErrInvalid, Msg: "open secrets file", Err: err}
	}
	defer func() { _ = fh.Close() }()
	data, err := io.ReadAll(io.LimitReader(fh, maxFileSize+1))
	if err != nil {
		return nil, &FetchError{Location: f.path, Kind: ErrInvalid, Msg: "read secrets file", Err: err}
	}
	if len(data) > maxFileSize {
		return nil, &FetchError{Location: f.path, Kind: ErrInvalid, Msg: fmt.Sprintf("secrets file %s is larger than %d bytes", f.path, maxFileSize)}
	}
	m, err := ParseFile(data)
	if err != nil {
		kind := ErrInvalid
		if errors.Is(err, ErrEmpty) {
			kind = ErrEmpty
		}
		return nil, &FetchError{Location: f.path, Kind: kind, Msg: "secrets file " + f.path, Err: err}
	}
	return m, nil
}

// ParseFile parses a secrets file: a JSON object (when the first non-blank
// byte is '{') or a YAML mapping, of valid names to scalar values. Errors
// name keys and positions, never values.
func ParseFile(data []byte) (map[string]Secret, error) {
	var (
		m   map[string]Secret
		err error
	)
	if t := bytes.TrimLeft(data, " \t\r\n\ufeff"); len(t) > 0 && t[0] == '{' {
		m, err = parseJSON(data)
	} else {
		m, err = parseYAML(data)
	}
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, ErrEmpty
	}
	return m, nil
}

func parseJSON(data []byte) (map[string]Secret, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	syntax := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("json syntax error at byte %d", se.Offset)
		}
		return fmt.Errorf("json at byte %d: malformed", d.InputOffset())
	}
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("json: want an object of name to value")
	}
	m := map[string]Secret{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, syntax(err)
		}
		name, _ := tok.(string)
		if err := checkKey(m, name); err != nil {
			return nil, err
		}
		tok, err = d.Token()
		if err != nil {
			return nil, syntax(err)
		}
		switch v := tok.(type) {
		case string:
			m[name] = New(v)
		case json.Number:
			m[name] = New(v.String())
		case bool:
			m[name] = New(fmt.Sprint(v))
		default:
			return nil, fmt.Errorf("key %q: value must be a string", name)
		}
	}
	if _, err := d.Token(); err != nil {
		return nil, syntax(err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("json: trailing data after the object")
	}
	return m, nil
}

func parseYAML(data []byte) (map[string]Secret, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind == 0 {
		return nil, nil // empty document
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("yaml: want a mapping of name to value")
	}
	root := doc.Content[0]
	m := map[string]Secret{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("yaml line %d: key must be a name", k.Line)
		}
		if err := checkKey(m, k.Value); err != nil {
			return nil, fmt.Errorf("yaml line %d: %w", k.Line, err)
		}
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return nil, fmt.Errorf("yaml line %d: key %q: value must be a string", v.Line, k.Value)
		}
		m[k.Value] = New(v.Value)
	}
	return m, nil
}

func checkKey(m map[string]Secret, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if _, dup := m[name]; dup {
		return fmt.Errorf("key %q appears twice", name)
	}
	return nil
}
