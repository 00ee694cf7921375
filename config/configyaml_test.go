package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// defaultLine finds "Default: X" in a comment; X runs to the end of the
// line and is read as a YAML scalar, so `Default: ""` is the empty string.
var defaultLine = regexp.MustCompile(`(?m)Default: (.*)$`)

// TestConfigYAMLDocumentsEveryKey holds the repository's config.yaml, which
// is the built-in default and the user's reference, to the schema: every
// key is there with a comment, and a comment's "Default: X" is the value the
// file sets, so a copy edited by a user still tells the defaults.
func TestConfigYAMLDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	var doc yaml.Node
	if err := yaml.Unmarshal(builtin(t), &doc); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	for _, k := range schema() {
		kn, vn := lookup(root, strings.Split(k.name, "."))
		if kn == nil {
			t.Errorf("config.yaml lacks %s", k.name)
			continue
		}
		comment := comments(kn, vn)
		if strings.TrimSpace(comment) == "" {
			t.Errorf("config.yaml: %s has no comment", k.name)
			continue
		}
		if k.list != nil {
			if len(vn.Content) == 0 {
				// An empty list by default: its comment documents the
				// items' keys.
				for _, f := range k.list.fields {
					if !strings.Contains(comment, f.name+":") {
						t.Errorf("config.yaml: %s is empty and its comment does not document %s", k.name, f.name)
					}
				}
				if !strings.Contains(comment, "Default: []") {
					t.Errorf("config.yaml: %s is empty but its comment does not say `Default: []`", k.name)
				}
				continue
			}
			item := vn.Content[0]
			for _, f := range k.list.fields {
				fk, fv := lookup(item, []string{f.name})
				if fk == nil {
					t.Errorf("config.yaml: %s[0] lacks %s", k.name, f.name)
					continue
				}
				checkDefault(t, k.name+"[0]."+f.name, comments(fk, fv), fv.Value, f.parse)
			}
			continue
		}
		checkDefault(t, k.name, comment, vn.Value, k.parse)
	}
}

// checkDefault checks that comment states a default equal to value.
func checkDefault(t *testing.T, name, comment, value string, parse func(string) (any, error)) {
	t.Helper()
	m := defaultLine.FindStringSubmatch(comment)
	if m == nil {
		t.Errorf("config.yaml: the comment of %s does not say `Default: ...`: %q", name, comment)
		return
	}
	var stated string
	if err := yaml.Unmarshal([]byte(m[1]), &stated); err != nil {
		t.Errorf("config.yaml: %s: Default %q: %v", name, m[1], err)
		return
	}
	want, err1 := parse(stated)
	got, err2 := parse(value)
	if err1 != nil || err2 != nil || !reflect.DeepEqual(want, got) {
		t.Errorf("config.yaml: %s is %q but its comment says Default: %s", name, value, m[1])
	}
}

// lookup finds the key and value nodes at path under mapping n.
func lookup(n *yaml.Node, path []string) (*yaml.Node, *yaml.Node) {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value != path[0] {
			continue
		}
		if len(path) == 1 {
			return n.Content[i], n.Content[i+1]
		}
		return lookup(n.Content[i+1], path[1:])
	}
	return nil, nil
}

func comments(kn, vn *yaml.Node) string {
	return strings.Join([]string{kn.HeadComment, kn.LineComment, vn.HeadComment, vn.LineComment}, "\n")
}

// TestConfigYAMLMentionsSources keeps the header of config.yaml true to how
// Load finds values.
func TestConfigYAMLMentionsSources(t *testing.T) {
	t.Parallel()
	text := string(builtin(t))
	for _, s := range []string{
		"DCACHE_<SECTION>_<KEY>", "--cache.size", "--data-dir", "flag > environment > --config file > this built-in default",
		"KiB", "KB", "PATH:TYPE:SIZE",
	} {
		if !strings.Contains(text, s) {
			t.Errorf("config.yaml does not mention %q", s)
		}
	}
	for _, k := range schema() {
		if strings.Contains(envName(k.name), "-") {
			t.Errorf("key %s gives an environment name a shell cannot set: %s", k.name, envName(k.name))
		}
	}
}
