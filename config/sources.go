package config

import (
	"strings"

	"github.com/spf13/pflag"
)

// checkEnv reads the DCACHE_* variables of env ("NAME=VALUE" entries, as
// from os.Environ), never the process environment. A name given twice
// counts once, with its last value, as in os/exec. A DCACHE_* name that
// sets no key is a problem: it is most likely a typo that viper, which
// looks up only the names it is asked for, would ignore in silence.
func checkEnv(env []string, keys []key, ps *problems) *source {
	s := newSource()
	byName := map[string]*key{}
	var names []string
	for i := range keys {
		n := envName(keys[i].name)
		byName[n] = &keys[i]
		names = append(names, n)
	}
	values := map[string]string{}
	var order []string
	for _, kv := range env {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, "DCACHE_") {
			continue
		}
		if _, dup := values[name]; !dup {
			order = append(order, name)
		}
		values[name] = value
	}
	for _, name := range order {
		origin := "$" + name
		k, ok := byName[name]
		if !ok {
			ps.add(origin, "", "unknown environment variable%s", didYouMean(name, names))
			continue
		}
		s.checkText(k, values[name], origin, ps)
	}
	return s
}

// flagValue is the pflag.Value of every configuration flag. It keeps the
// text as given; Load checks it, so that a bad flag value is reported with
// every other problem rather than alone by the flag parser.
type flagValue struct {
	typ  string
	list bool // a list key: each use of the flag adds items
	text string
}

func (v *flagValue) String() string { return v.text }
func (v *flagValue) Type() string   { return v.typ }

func (v *flagValue) Set(s string) error {
	if v.list && v.text != "" {
		v.text += "," + s
		return nil
	}
	v.text = s
	return nil
}

// RegisterFlags adds one flag per key to fs, named like the key
// (--cache.size, --log.sync ...), and --data-dir as the friendly name of
// --data_dir. A flag the user does not give overrides nothing: the flags
// carry no defaults, the built-in config.yaml does. --log.replicas takes
// PATH:TYPE:SIZE[,PATH:TYPE:SIZE...] and may be repeated.
func RegisterFlags(fs *pflag.FlagSet) {
	for _, k := range schema() {
		f := fs.VarPF(&flagValue{typ: k.typ, list: k.list != nil}, k.name, "", k.usage)
		if k.typ == "bool" {
			f.NoOptDefVal = "true" // --fuse.debug alone means true
		}
		if k.name == "data_dir" {
			fs.VarP(&flagValue{typ: k.typ}, dataDirAlias, "", k.usage)
			f.Hidden = true // shown once, as --data-dir
		}
	}
}

// checkFlags checks the flags of fs that were set, and records the flag
// that gives each key for viper to read. fs may be nil, and it need not
// hold every configuration flag (main may define some itself).
func checkFlags(fs *pflag.FlagSet, keys []key, ps *problems) *source {
	s := newSource()
	if fs == nil {
		return s
	}
	changed := func(name string) *pflag.Flag {
		if f := fs.Lookup(name); f != nil && f.Changed {
			return f
		}
		return nil
	}
	for i := range keys {
		k := &keys[i]
		f := changed(k.name)
		if k.name == "data_dir" {
			if alias := changed(dataDirAlias); alias != nil {
				if f != nil && f.Value.String() != alias.Value.String() {
					ps.add("--"+dataDirAlias, k.name, "%q conflicts with --%s %q", alias.Value.String(), k.name, f.Value.String())
					s.fail(k.name)
					continue
				}
				f = alias
			}
		}
		if f != nil && s.checkText(k, f.Value.String(), "--"+f.Name, ps) {
			s.flags[k.name] = f
		}
	}
	return s
}

// textFlag hands a flag to viper as the text the user typed. Viper's own
// binding (BindPFlag) converts a flag by its pflag type, and a flag of type
// "bool" goes through cast.ToBool, which turns "on" or "tRuE" into false
// without an error; as text, the value reaches the schema's parser, the
// same one that checked the flag.
type textFlag struct{ f *pflag.Flag }

func (t textFlag) HasChanged() bool    { return t.f.Changed }
func (t textFlag) Name() string        { return t.f.Name }
func (t textFlag) ValueString() string { return t.f.Value.String() }
func (t textFlag) ValueType() string   { return "string" }
