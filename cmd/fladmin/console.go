package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
)

func newConsoleCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "console",
		Short: "Print a one-time login link to the director's web console",
		Long: `Print a link that logs a browser in to the director's read-only web
console (director serve --web-listen) as you, with your role: open it in
the browser. The link works once and for 5 minutes; the session it starts
lasts 12 hours. A browser that presents your admin certificate needs no
link.

Treat the link as a password until it is used: whoever opens it first
reads the federation as you.`,
		Example: `  fladmin console
  fladmin console -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reply, err := f.do(cmd.Context(), api.CmdConsoleLogin)
			if err != nil {
				return err
			}
			var url string
			var expires time.Time
			if err := reply.Into(api.MetaURL, &url); err != nil {
				return fmt.Errorf("console_login reply: %w", err)
			}
			if err := reply.Into(api.MetaExpires, &expires); err != nil {
				return fmt.Errorf("console_login reply: %w", err)
			}
			if f.structured() {
				return f.print(map[string]any{api.MetaURL: url, api.MetaExpires: expires})
			}
			fmt.Fprintln(f.stdout, url)
			_, err = fmt.Fprintf(f.stderr, "Open the link in your browser. It works once and expires in 5 minutes (at %s).\n",
				expires.Local().Format("15:04:05"))
			return err
		},
	}
}
