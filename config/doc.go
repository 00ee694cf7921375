// Package config loads dcache's configuration: the documented config.yaml
// at the repository root (embedded by main as the built-in default), an
// optional --config file, DCACHE_* environment variables and command line
// flags. It is the only package besides main that knows where settings come
// from; every layer receives plain typed values from main.
//
// Sources, lowest precedence first; a higher one replaces a key's whole
// value (log.replicas is replaced as a list, never merged item by item):
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
// Parsing checks syntax and enumerations in each source, so a bad value is
// reported even where a higher source overrides it; validation then checks
// ranges and relations (low watermark below high, dirty budget within the
// cache) on the merged result, and resolves paths: relative paths are taken
// from the current directory, and empty backend and log paths default to
// <data_dir>/backend and <data_dir>/log.
//
// The package reads YAML with go.yaml.in/yaml/v3 nodes rather than through
// viper: the nodes give line numbers, expose every key (viper folds case and
// cannot report unknown keys), and show wrong types (viper's merge drops a
// value whose type differs, silently). The environment comes in as a slice,
// not from the process, so tests and main control it alike.
package config
