//go:build unix

package config

import (
	"embed"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Roles are data: each is a list of units in roles/<name>.yaml. A config
// with a role gets the role's units first; a unit of the config with the
// same name overrides the keys it sets (the rest keep the role's values),
// and other config units are added.
//
//go:embed roles/*.yaml
var roleFS embed.FS

// RoleUnits returns the YAML of a built-in role's units.
func RoleUnits(role string) ([]byte, error) {
	b, err := roleFS.ReadFile("roles/" + role + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("no built-in role %q", role)
	}
	return b, nil
}

// Roles lists the built-in roles.
func Roles() []string {
	ents, _ := fs.ReadDir(roleFS, "roles")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	return out
}

// mergeRole rewrites the document's units: the role's, overridden and
// extended by the config's.
func mergeRole(doc *yaml.Node) error {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil // the strict decode reports the shape
	}
	root := doc.Content[0]
	roleNode := mapValue(root, "role")
	if roleNode == nil || roleNode.Kind != yaml.ScalarNode || roleNode.Value == "" || !slices.Contains(Roles(), roleNode.Value) {
		return nil // no role, or validation names the bad one
	}
	data, err := RoleUnits(roleNode.Value)
	if err != nil {
		return err
	}
	var rn yaml.Node
	if err := yaml.Unmarshal(data, &rn); err != nil {
		return fmt.Errorf("built-in role %s: %w", roleNode.Value, err)
	}
	roleUnits := rn.Content[0].Content
	own := mapValue(root, "units")
	var ownUnits []*yaml.Node
	if own != nil && own.Kind == yaml.SequenceNode {
		ownUnits = own.Content
	} else if own != nil {
		return nil // not a list: the strict decode reports it
	}
	used := map[*yaml.Node]bool{}
	var merged []*yaml.Node
	for _, ru := range roleUnits {
		name := mapValue(ru, "name")
		for _, ou := range ownUnits {
			if n := mapValue(ou, "name"); ou.Kind == yaml.MappingNode && n != nil && name != nil && n.Value == name.Value {
				overlay(ru, ou)
				used[ou] = true
			}
		}
		merged = append(merged, ru)
	}
	for _, ou := range ownUnits {
		if !used[ou] {
			merged = append(merged, ou)
		}
	}
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: merged}
	if own != nil {
		*own = *seq
	} else {
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "units"}, seq)
	}
	return nil
}

// overlay sets every key of src on dst, replacing dst's value.
func overlay(dst, src *yaml.Node) {
	for i := 0; i+1 < len(src.Content); i += 2 {
		k, v := src.Content[i], src.Content[i+1]
		if cur := mapValue(dst, k.Value); cur != nil {
			*cur = *v
			continue
		}
		dst.Content = append(dst.Content, k, v)
	}
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}
