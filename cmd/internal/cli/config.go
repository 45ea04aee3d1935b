package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// LoadConfig reads a YAML file whose top-level keys are the names of flags in
// fs (for example `grpc-listen: 0.0.0.0:50051`) and sets every flag the
// command line did not set: flags win over the file. Lists fill slice flags.
// An unknown key, a key naming a flag the file may not set, or a value the
// flag refuses is a UsageError, as the same mistake in a flag is, that
// names the file and the key; a file that cannot be read is a plain error.
func LoadConfig(fs *pflag.FlagSet, path string, forbidden ...string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc map[string]yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return Usagef("config %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || slices.Contains(forbidden, k) {
			return Usagef("config %s: unknown key %q (keys are the flag names, see --help)", path, k)
		}
		if f.Changed {
			continue
		}
		node := doc[k]
		switch node.Kind {
		case yaml.ScalarNode:
			if err := f.Value.Set(node.Value); err != nil {
				return Usagef("config %s: key %q: %w", path, k, err)
			}
		case yaml.SequenceNode:
			sv, ok := f.Value.(pflag.SliceValue)
			if !ok {
				return Usagef("config %s: key %q takes one value, not a list", path, k)
			}
			var items []string
			for _, n := range node.Content {
				if n.Kind != yaml.ScalarNode {
					return Usagef("config %s: key %q: list items must be plain values", path, k)
				}
				items = append(items, n.Value)
			}
			if err := sv.Replace(items); err != nil {
				return Usagef("config %s: key %q: %w", path, k, err)
			}
		default:
			return Usagef("config %s: key %q: want a value or a list", path, k)
		}
		f.Changed = true
	}
	return nil
}

// AddConfigFlag adds --config, the YAML file LoadConfig reads, to c.
func AddConfigFlag(c *cobra.Command, path *string) {
	c.Flags().StringVar(path, "config", "", "YAML file with flag values (keys are the flag names)")
}

// RunWithConfig returns a cobra RunE that loads the --config file at *path,
// if one was given, into the flags the command line left unset, then runs run.
func RunWithConfig(path *string, run func(*cobra.Command) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		if *path != "" {
			if err := LoadConfig(cmd.Flags(), *path, "config"); err != nil {
				return err
			}
		}
		return run(cmd)
	}
}
