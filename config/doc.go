// Package config loads dcache's configuration: the documented config.yaml
// at the repository root (embedded by main as the built-in default), an
// optional --config file, DCACHE_* environment variables and command line
// flags. It is the only package besides main that knows where settings come
// from; every layer receives plain typed values from main.
//
// Sources, lowest precedence first; a higher one replaces a key's whole
// value (a list key, log.replicas or quota.directories, is replaced as a
// list, never merged item by item):
//
//	built-in config.yaml   sets every key; the single source of defaults
//	--config FILE          YAML, same layout, any subset of the keys
//	DCACHE_CACHE_SIZE=2GiB one variable per key: DCACHE_ + key, upper case,
//	                       dots -> underscores
//	--cache.size 2GiB      one flag per key, named like it; --data-dir
//	                       is the friendly name of --data_dir
//
// Value syntax:
//
//	size      1048576, 512MiB, 1.5GiB, 1GB, 4K   (Size)
//	duration  100ms, 5s, 1m30s                   (time.ParseDuration)
//	fraction  0.5
//	bool      true, false
//	replicas  PATH:TYPE:SIZE[,PATH:TYPE:SIZE...] in variables and flags;
//	          a list of {path, type, size} mappings in YAML
//	quotas    PATH:BYTES:INODES[,...] in variables and flags; a list of
//	          {path, bytes, inodes} mappings in YAML (quota.directories)
//
// Every problem in every source is collected into one *Error (see
// IsValidation), each naming where the value came from, the key and the
// reason:
//
//	/etc/dcache.yaml:12: cache.size: "12XB" is not a size (use e.g. 512MiB, 1GiB)
//	/etc/dcache.yaml:3: cachee: unknown key (did you mean "cache"?)
//	$DCACHE_CACHE_SZIE: unknown environment variable (did you mean "DCACHE_CACHE_SIZE"?)
//	--log.replicas: log.replicas[1].type: "hdd" is not one of ssd, aep
//
// Loading runs in three steps, each done by the library fit for it:
//
//	strict pass  each source alone  yaml.v3 node trees; the env slice and
//	                                the set flags as text
//	layering     sources merged     github.com/spf13/viper, a fresh
//	                                instance per Load, never the global one
//	decoding     merged -> Config   v.Get per key, parsed by the schema
//
// The strict pass reads the built-in defaults and the file as
// go.yaml.in/yaml/v3 node trees, and the environment slice and the set
// flags as text. It reports what viper would let pass in silence: unknown
// keys, inside list items too (viper keeps any key, folded to lower case),
// unknown DCACHE_* variables (viper looks up only the names it is asked
// for), values of the wrong shape (viper's merge drops a value whose type
// differs from the one below it), duplicate keys, and the syntax of every
// value, so that a bad value is reported even where a higher source
// overrides it. Nodes also give the line of each key. What passes is kept
// as written, as text: YAML's implicit types would read 010 as the octal 8,
// 2024-01-01 as a time and a path named 1.10 as the number 1.1.
//
// Viper then layers the sources: the defaults with SetDefault, the file
// with MergeConfigMap into its config layer, the environment merged over
// the file in the same layer, and the flags the user set with
// BindFlagValue. Viper's own environment layer is not used because it
// reads the process environment (os.LookupEnv), and Load takes the
// variables as a slice so that main and the tests control them alike;
// merged over the file, they still rank below the flags. Flags are bound
// as text rather than with BindPFlag, which converts a "bool" flag with
// cast.ToBool and so turns "on" into false without an error.
//
// Decoding reads each key's merged raw value with v.Get and checks it
// against the schema with the key's own parser, instead of viper's
// mapstructure decoding, which zeroes or coerces a value of the wrong type.
// Validation then checks ranges and relations (low watermark below high,
// dirty budget within the cache) on the result, and resolves paths:
// relative paths are taken from the current directory, and empty backend
// and log paths default to <data_dir>/backend and <data_dir>/log. Viper
// cannot tell where a value came from, so the origin in messages and in
// YAML's comments is the strict pass's record of the source of highest
// precedence that gives the key.
package config
