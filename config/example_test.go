package config_test

import (
	"fmt"
	"os"

	"github.com/dcache/dcache/config"
	"github.com/spf13/pflag"
)

// This is what main does for `dcache mount`: register the flags, parse the
// command line, and load with the embedded config.yaml as defaults.
func ExampleLoad() {
	defaults, err := os.ReadFile("../config.yaml") // main embeds it with //go:embed
	if err != nil {
		panic(err)
	}
	fs := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	config.RegisterFlags(fs)
	if err := fs.Parse([]string{"--cache.size", "2GiB", "--log.sync", "always"}); err != nil {
		panic(err)
	}
	env := []string{"DCACHE_DATA_DIR=/srv/dcache", "DCACHE_FLUSH_MAX_DIRTY_AGE=1m"}

	c, err := config.Load(defaults, "", fs, env)
	if err != nil {
		fmt.Println(err)
		if config.IsValidation(err) {
			os.Exit(2)
		}
		os.Exit(1)
	}
	fmt.Println(c.DataDir, c.Cache.Size, c.Log.Sync, c.Flush.MaxDirtyAge)
	fmt.Println(c.Backend.Path, c.Log.Replicas[0].Path)
	// Output:
	// /srv/dcache 2GiB always 1m0s
	// /srv/dcache/backend /srv/dcache/log
}

// Every problem comes back at once, each with where it came from.
func ExampleLoad_errors() {
	defaults, err := os.ReadFile("../config.yaml")
	if err != nil {
		panic(err)
	}
	env := []string{"DCACHE_CACHE_SZIE=2GiB", "DCACHE_FLUSH_LOW_WATERMARK=0.6", "DCACHE_LOG_REPLICAS=/ssd/log:hdd:1GiB"}
	_, err = config.Load(defaults, "", nil, env)
	fmt.Println(err)
	fmt.Println(config.IsValidation(err))
	// Output:
	// config: 3 problems:
	//   $DCACHE_CACHE_SZIE: unknown environment variable (did you mean "DCACHE_CACHE_SIZE"?)
	//   $DCACHE_LOG_REPLICAS: log.replicas[0].type: "hdd" is not one of ssd, aep
	//   $DCACHE_FLUSH_LOW_WATERMARK: flush.low_watermark: 0.6 must be below flush.high_watermark (0.5)
	// true
}
