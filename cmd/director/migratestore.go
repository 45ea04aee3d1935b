package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/store"
)

// migrateStoreOptions are the flags of `director migrate-store`.
type migrateStoreOptions struct {
	from string
	to   string
}

func newMigrateStoreCmd() *cobra.Command {
	o := &migrateStoreOptions{}
	cmd := &cobra.Command{
		Use:   "migrate-store --from sqlite:PATH --to postgres://...",
		Short: "Copy a director's database into an empty one, e.g. from SQLite into PostgreSQL",
		Long: `Copy every row of the database --from into the database --to: envoys,
jobs, their rounds, reports and metrics, events, the audit trail and
leases. The copy is one transaction on the target: it lands whole or not
at all. The target must be empty (a new database, migrated by this
command); one with rows is refused. Both databases are brought to this
binary's schema first. It prints the rows copied per table.

Files are not copied: rows name them relative to the data dir, so a
director on the target takes the same --data-dir (or a copy of it).
Stop the director that uses --from first: rows it writes during or after
the copy are not in the target.`,
		Example: `  director migrate-store --from sqlite:/var/lib/fedplane/fedplane.db \
    --to 'postgres://fedplane@db.example.org/fedplane?sslmode=verify-full'
  director serve --data-dir /var/lib/fedplane \
    --database 'postgres://fedplane@db.example.org/fedplane?sslmode=verify-full'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context(), cmd.OutOrStdout()) },
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "the database to copy from: sqlite:PATH or postgres://... (required)")
	f.StringVar(&o.to, "to", "", "the empty database to copy into: postgres://... or sqlite:PATH (required)")
	return cmd
}

func (o *migrateStoreOptions) run(ctx context.Context, w io.Writer) error {
	if err := checkDatabase("from", o.from, false); err != nil {
		return err
	}
	if err := checkDatabase("to", o.to, false); err != nil {
		return err
	}
	if o.from == o.to {
		return cli.Usagef("--from and --to are the same database")
	}
	// store.Open would create a missing SQLite file: an empty source is a
	// typo, not a copy.
	if path, ok := strings.CutPrefix(o.from, "sqlite:"); ok {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("--from: %w", err)
		}
	}
	src, err := store.Open(ctx, o.from, store.Options{})
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	defer src.Close()
	dst, err := store.Open(ctx, o.to, store.Options{})
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	defer dst.Close()
	counts, err := store.Copy(ctx, dst, src)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TABLE\tROWS")
	var total int64
	for _, c := range counts {
		fmt.Fprintf(tw, "%s\t%d\n", c.Table, c.Rows)
		total += c.Rows
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "copied %d rows from %s to %s\n", total, store.Redact(o.from), store.Redact(o.to))
	return err
}

// checkDatabase refuses a database URL that store.Open would not take, or
// would take for something else than meant (a bare word becomes a SQLite
// file of that name): --NAME takes postgres://, postgresql:// or sqlite:
// URLs only, and the empty string when empty is allowed.
func checkDatabase(name, dsn string, empty bool) error {
	switch {
	case dsn == "" && empty:
		return nil
	case dsn == "":
		return cli.Usagef("--%s is required", name)
	case strings.HasPrefix(dsn, "sqlite:"):
		if strings.TrimPrefix(dsn, "sqlite:") == "" {
			return cli.Usagef("--%s %q: sqlite: needs a file's path", name, dsn)
		}
		return nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return cli.Usagef("--%s %s: want postgres://USER@HOST[:PORT]/DATABASE[?sslmode=...]", name, store.Redact(dsn))
		}
		return nil
	default:
		return cli.Usagef("--%s %s: want postgres://... or sqlite:PATH", name, store.Redact(dsn))
	}
}
