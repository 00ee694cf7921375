package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// section is one mapping level of the schema: the root, or "cache", "log"...
type section struct {
	name     string   // dotted prefix; "" at the root
	children []string // key and section names in schema order
	keys     map[string]*key
	sections map[string]*section
}

func newSection(name string) *section {
	return &section{name: name, keys: map[string]*key{}, sections: map[string]*section{}}
}

// newTree arranges the keys into sections by their dotted names.
func newTree(keys []key) *section {
	root := newSection("")
	for i := range keys {
		k := &keys[i]
		s := root
		parts := strings.Split(k.name, ".")
		for _, p := range parts[:len(parts)-1] {
			child, ok := s.sections[p]
			if !ok {
				child = newSection(joinKey(s.name, p))
				s.sections[p] = child
				s.children = append(s.children, p)
			}
			s = child
		}
		leaf := parts[len(parts)-1]
		s.keys[leaf] = k
		s.children = append(s.children, leaf)
	}
	return root
}

func joinKey(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// yamlSource is the strict pass over one YAML document (the built-in
// defaults or the file). It walks the node tree, so that it sees every key,
// with its line, before anything is merged: unknown keys (viper would keep
// them, folded to lower case, and never say), values of the wrong shape
// (viper's merge drops a value whose type differs from the one below it),
// duplicate keys, and the syntax of every value, so that a bad value is
// reported even where a higher source overrides it. What passes is kept as
// written, as text, for viper to layer.
type yamlSource struct {
	name string // file path, or defaultsOrigin
	keys []key
	// complete requires every item of a list whose items take left-out
	// fields from the defaults (log.replicas) to give every field: true
	// for the built-in defaults, whose first item fills them elsewhere.
	complete bool
	src      *source
	ps       *problems
}

// defaultsOrigin names the built-in defaults in messages and origins.
const defaultsOrigin = "built-in defaults"

var yamlLineError = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// checkYAML checks data as a YAML configuration document named name.
func checkYAML(data []byte, name string, keys []key, complete bool, ps *problems) *source {
	s := &yamlSource{name: name, keys: keys, complete: complete, src: newSource(), ps: ps}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) { // io.EOF: empty document, nothing set
			s.syntaxError(err)
		}
		return s.src
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		ps.add(s.at(&extra), "", "more than one YAML document (remove the --- separator)")
		return s.src
	case !errors.Is(err, io.EOF):
		s.syntaxError(err)
		return s.src
	}
	if len(doc.Content) == 0 {
		return s.src
	}
	root := resolve(doc.Content[0])
	switch {
	case root.Kind == yaml.MappingNode:
		s.mapping(root, newTree(keys))
	case isNull(root): // only comments
	default:
		ps.add(s.at(root), "", "expected a mapping of keys at the top, found %s", describe(root))
	}
	return s.src
}

func (s *yamlSource) syntaxError(err error) {
	msg := err.Error()
	if m := yamlLineError.FindStringSubmatch(msg); m != nil {
		s.ps.add(s.name+":"+m[1], "", "%s", m[2])
		return
	}
	s.ps.add(s.name, "", "%s", strings.TrimPrefix(msg, "yaml: "))
}

// at is the origin of node n: "NAME:LINE".
func (s *yamlSource) at(n *yaml.Node) string {
	return fmt.Sprintf("%s:%d", s.name, n.Line)
}

// mapping walks the keys of n, which sets the keys of section sec.
func (s *yamlSource) mapping(n *yaml.Node, sec *section) {
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), resolve(n.Content[i+1])
		name := kn.Value
		full := joinKey(sec.name, name)
		if line, dup := seen[name]; dup {
			s.ps.add(s.at(kn), full, "given twice (also on line %d)", line)
			continue
		}
		seen[name] = kn.Line
		if kn.Kind != yaml.ScalarNode {
			s.ps.add(s.at(kn), sec.name, "a key must be a name, found %s", describe(kn))
			continue
		}
		if child, ok := sec.sections[name]; ok {
			switch {
			case vn.Kind == yaml.MappingNode:
				s.mapping(vn, child)
			case isNull(vn): // every key commented out
			default:
				s.ps.add(s.at(kn), full, "expected a mapping of keys (%s), found %s",
					strings.Join(child.children, ", "), describe(vn))
			}
			continue
		}
		k, ok := sec.keys[name]
		if !ok {
			s.ps.add(s.at(kn), full, "unknown key%s", s.suggest(sec, name))
			continue
		}
		if k.list != nil {
			s.list(kn, vn, k)
			continue
		}
		s.scalar(kn, vn, k)
	}
}

// scalar checks the value of a plain key and keeps its text.
func (s *yamlSource) scalar(kn, vn *yaml.Node, k *key) {
	text, ok := s.text(kn, vn, k.name, k.path)
	if !ok {
		s.src.fail(k.name)
		return
	}
	if _, err := k.parse(text); err != nil {
		s.ps.add(s.at(vn), k.name, "%v", err)
		s.src.fail(k.name)
		return
	}
	s.src.set(k.name, text, s.at(kn))
}

// text returns the text of a scalar value as written. YAML's implicit types
// do not apply: 1GiB, 1048576 and "1048576" are all the text of a size, and
// the key's parser decides. (Decoded the usual way, YAML would read 010 as
// the octal 8, 2024-01-01 as a time and a path named 1.10 as the number
// 1.1.) A null is "" for paths and a problem elsewhere.
func (s *yamlSource) text(kn, vn *yaml.Node, name string, path bool) (string, bool) {
	switch {
	case vn.Kind != yaml.ScalarNode:
		s.ps.add(s.at(kn), name, "expected a single value, found %s", describe(vn))
		return "", false
	case isNull(vn) && path:
		return "", true
	case isNull(vn):
		s.ps.add(s.at(kn), name, "no value given")
		return "", false
	}
	return vn.Value, true
}

// list checks a list key: a list of mappings with the keys of its items.
// Keys an item leaves out take the values of the first item of the
// built-in defaults or their own defaults (see decodeList).
func (s *yamlSource) list(kn, vn *yaml.Node, k *key) {
	var seq []*yaml.Node
	switch {
	case vn.Kind == yaml.SequenceNode:
		seq = vn.Content
	case isNull(vn): // an empty list
	default:
		s.ps.add(s.at(kn), k.name, "expected a list of %ss, found %s", k.list.item, describe(vn))
		s.src.fail(k.name)
		return
	}
	items := []any{}
	var origins []map[string]string
	ok := true
	for i, in := range seq {
		item, o, good := s.item(k.list, resolve(in), fmt.Sprintf("%s[%d]", k.name, i))
		items = append(items, item)
		origins = append(origins, o)
		ok = ok && good
	}
	if !ok {
		s.src.fail(k.name)
		return
	}
	s.src.set(k.name, items, s.at(kn))
	s.src.items[k.name] = origins
}

// item checks one item of list l, named name ("log.replicas[1]"), and
// returns the text of the fields it gives.
func (s *yamlSource) item(l *listKind, n *yaml.Node, name string) (map[string]any, map[string]string, bool) {
	fields := l.fields
	names := l.names()
	item := map[string]any{}
	origins := map[string]string{}
	if n.Kind != yaml.MappingNode {
		s.ps.add(s.at(n), name, "expected a mapping with keys %s, found %s", strings.Join(names, ", "), describe(n))
		return item, origins, false
	}
	ok := true
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		kn, vn := resolve(n.Content[i]), resolve(n.Content[i+1])
		full := name + "." + kn.Value
		if line, dup := seen[kn.Value]; dup {
			s.ps.add(s.at(kn), full, "given twice (also on line %d)", line)
			ok = false
			continue
		}
		seen[kn.Value] = kn.Line
		j := slices.Index(names, kn.Value)
		if j < 0 || kn.Kind != yaml.ScalarNode {
			s.ps.add(s.at(kn), full, "unknown key%s", didYouMean(kn.Value, names))
			ok = false
			continue
		}
		text, good := s.text(kn, vn, full, fields[j].path)
		if !good {
			ok = false
			continue
		}
		if _, err := fields[j].parse(text); err != nil {
			s.ps.add(s.at(vn), full, "%v", err)
			ok = false
			continue
		}
		item[kn.Value] = text
		origins[kn.Value] = s.at(kn)
	}
	for _, f := range fields {
		if _, given := seen[f.name]; given {
			continue
		}
		if (s.complete && l.fromDefaults) || (!l.fromDefaults && f.def == "") {
			s.ps.add(s.at(n), name+"."+f.name, "missing (each %s needs %s)", l.item, strings.Join(l.required(), ", "))
			ok = false
		}
		origins[f.name] = s.at(n)
	}
	return item, origins, ok
}

// suggest proposes a correction for an unknown key name in section sec: a
// close sibling, or else the full name of the one key with that name in
// another section ("size" at the top may mean "cache.size").
func (s *yamlSource) suggest(sec *section, name string) string {
	if hint := didYouMean(name, sec.children); hint != "" {
		return hint
	}
	var elsewhere []string
	for _, k := range s.keys {
		if strings.HasSuffix(k.name, "."+name) || k.name == name {
			elsewhere = append(elsewhere, k.name)
		}
	}
	if len(elsewhere) == 1 {
		return fmt.Sprintf(" (did you mean %q?)", elsewhere[0])
	}
	return ""
}

// resolve follows YAML aliases (*name) to the node they stand for.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// describe names the kind of a node for messages: "a mapping", "a list"...
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "nothing"
		}
		return fmt.Sprintf("%q", n.Value)
	}
	return "something else"
}
