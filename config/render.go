package config

import (
	"bytes"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// YAML renders the configuration in the layout of config.yaml. Load reads
// the result back to an equal Config. A value that does not come from the
// built-in defaults carries a comment saying where it came from, for
// `dcache config` and .dcache/config.
func (c *Config) YAML() []byte {
	root := &yaml.Node{Kind: yaml.MappingNode}
	sections := map[string]*yaml.Node{"": root}
	for _, k := range schema() {
		parent, leaf := root, k.name
		if i := strings.LastIndex(k.name, "."); i >= 0 {
			parent, leaf = mappingFor(sections, k.name[:i]), k.name[i+1:]
		}
		kn := scalarNode(leaf, "!!str")
		var vn *yaml.Node
		if k.list != nil {
			vn = &yaml.Node{Kind: yaml.SequenceNode}
			for _, row := range k.list.scalars(c) {
				item := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
				for j, f := range k.list.fields {
					item.Content = append(item.Content, scalarNode(f.name, "!!str"), scalarNode(row[j][0], row[j][1]))
				}
				vn.Content = append(vn.Content, item)
			}
		} else {
			vn = scalarNode(k.scalar(c))
		}
		if o := c.origins[k.name]; o != "" && !strings.HasPrefix(o, defaultsOrigin) {
			kn.LineComment = "from " + o
		}
		parent.Content = append(parent.Content, kn, vn)
	}
	var b bytes.Buffer
	b.WriteString("# dcache effective configuration\n")
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		// Only scalars, lists and mappings built above: cannot fail.
		panic(fmt.Sprintf("config: render YAML: %v", err))
	}
	if err := enc.Close(); err != nil {
		panic(fmt.Sprintf("config: render YAML: %v", err))
	}
	return b.Bytes()
}

// mappingFor returns the mapping node of section name, adding it (and its
// parents) to the tree on first use.
func mappingFor(sections map[string]*yaml.Node, name string) *yaml.Node {
	if n, ok := sections[name]; ok {
		return n
	}
	parent, leaf := sections[""], name
	if i := strings.LastIndex(name, "."); i >= 0 {
		parent, leaf = mappingFor(sections, name[:i]), name[i+1:]
	}
	n := &yaml.Node{Kind: yaml.MappingNode}
	parent.Content = append(parent.Content, scalarNode(leaf, "!!str"), n)
	sections[name] = n
	return n
}

func scalarNode(value, tag string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Value: value, Tag: tag}
}
