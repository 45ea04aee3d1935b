package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/fedplane/fedplane/api"
)

// chromium is Debian's Chromium, which CI installs (.ci/run).
const chromium = "/usr/bin/chromium"

// browser starts a headless Chromium for the test, and returns its context
// and what its pages log as errors (exceptions, CSP refusals, failed
// loads). It skips the test where Chromium is missing, but fails it in CI,
// where it must run.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s: %v: CI installs Debian's chromium for the browser test (.ci/run)", chromium, err)
		}
		t.Skipf("%s not found (apt-get install chromium): the web console's browser test needs it", chromium)
	}
	var out strings.Builder
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(&syncWriter{w: &out}),
	}
	for _, flag := range []string{"headless", "no-sandbox", "disable-gpu", "disable-quic", "no-first-run",
		"disable-background-networking", "disable-component-update", "disable-sync", "hide-scrollbars"} {
		opts = append(opts, chromedp.Flag(flag, true))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
		if t.Failed() {
			t.Logf("chromium's output:\n%s", out.String())
		}
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v\n%s", err, out.String())
	}
	var mu sync.Mutex
	var errs []string
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				errs = append(errs, m.String())
				mu.Unlock()
			}
		}
	}()
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(errs)
	}
}

// syncWriter serializes the browser's output, which two pipes write.
type syncWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// evaluate runs a script in the page and decodes its value.
func evaluate[T any](t *testing.T, ctx context.Context, script string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](script))
	if err != nil {
		t.Fatalf("evaluate %s: %v", script, err)
	}
	return v
}

// chartPoints is, per chart of the open job, how many points it draws.
const chartPoints = `Object.fromEntries([...document.querySelectorAll('#charts figure.chart')].map(
	f => [f.dataset.metric, f.querySelectorAll('circle.pt').length]))`

// TestWebConsole opens the console in a real browser before a job starts,
// and watches it run: the job's page gets a chart per aggregated metric,
// one point per finished round, from the event stream alone; a reload
// shows the same. It saves screenshots ($FEDPLANE_SCREENSHOT, else a temp
// file), for a person to look at.
func TestWebConsole(t *testing.T) {
	ctx, pageErrors := browser(t)
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	d := startDirectorAdmin(t, t.TempDir(), append(fastDirector, "--web-listen", anyPort)...)
	if d.web == "" {
		t.Fatal("the director's serving line has no web= address")
	}
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	waitOnline(t, d, "site-a")
	// The job waits for site-b, which starts once the page is open: every
	// round happens while the browser watches.
	const rounds = 3
	id := submitJob(t, d, trainJob(t, "console", `"min_envoys": 2`, rounds, "ok", "1m"))

	r := fladmin(t, d.admin, "console")
	link := strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(link, "http://"+d.web+"/login?token=") || !strings.Contains(r.stderr, "expires in 5 minutes") {
		t.Fatalf("fladmin console: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	row := fmt.Sprintf(`#jobs tr[data-job="%s"]`, id)
	err := chromedp.Do(ctx,
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.Click(chromedp.CSS(row+` td:nth-child(2)`)),
		chromedp.WaitVisible(chromedp.CSS(`#detail`)),
	)
	if err != nil {
		t.Fatalf("open the console and the job: %v", err)
	}
	if u := evaluate[string](t, ctx, `location.href`); u != "http://"+d.web+"/#/job/"+id {
		t.Fatalf("the page is at %s: want the job's, and the token gone from the address bar", u)
	}
	eventually(t, 20*time.Second, "the page to show the job pending, following the event stream", func() bool {
		return evaluate[string](t, ctx, `document.getElementById('d-status').textContent + ' ' + document.getElementById('live').textContent`) == "pending live"
	})
	// A mark that a reload would wipe: the charts below must grow without one.
	evaluate[bool](t, ctx, `window.sameLoad = true`)

	startEnvoy(t, d, "site-b", makeShard(t, 4, 30))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	// The aggregated metrics, as the director recorded them per round.
	var events []api.Event
	if err := json.Unmarshal([]byte(mustFladmin(t, d.admin, "events", "--job", id, "-o", "json")), &events); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for _, e := range events {
		if e.Kind == api.EventJobRound {
			for k := range e.Metrics {
				want[k]++
			}
		}
	}
	if len(want) == 0 {
		t.Fatalf("the job's round events carry no aggregated metrics: %+v", events)
	}
	for k, n := range want {
		if n != rounds {
			t.Fatalf("metric %s in %d round events, want %d", k, n, rounds)
		}
	}

	check := func(when string) {
		t.Helper()
		var got map[string]int
		eventually(t, 20*time.Second, when+": a chart per metric with a point per round", func() bool {
			got = evaluate[map[string]int](t, ctx, chartPoints)
			return len(got) == len(want) && evaluate[string](t, ctx, `document.getElementById('d-status').textContent`) == "finished"
		})
		for k := range want {
			if got[k] != rounds {
				t.Fatalf("%s: chart %s has %d points, want %d (all: %v)", when, k, got[k], rounds, got)
			}
		}
		label := evaluate[string](t, ctx, `document.querySelector('#d-progress .label').textContent`)
		if label != fmt.Sprintf("%d / %d rounds", rounds, rounds) {
			t.Fatalf("%s: progress %q", when, label)
		}
	}
	check("live")
	if !evaluate[bool](t, ctx, `window.sameLoad === true`) {
		t.Fatal("the page was reloaded: the charts must grow from the event stream")
	}
	// Points are placed by round: the x of round 1 to 3 increases.
	xs := evaluate[[]float64](t, ctx, `[...document.querySelectorAll('#charts figure.chart')][0].querySelectorAll('circle.pt').values().map(c => +c.getAttribute('cx')).toArray()`)
	if len(xs) != rounds || !(xs[0] < xs[1] && xs[1] < xs[2]) {
		t.Fatalf("first chart's points at x %v: want %d, left to right", xs, rounds)
	}

	if err := chromedp.Do(ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(`#charts figure.chart`))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	check("after a reload")
	if evaluate[bool](t, ctx, `window.sameLoad === true`) {
		t.Fatal("the reload did not happen")
	}

	shot := os.Getenv("FEDPLANE_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "console.png")
	}
	saveScreenshot(t, ctx, shot)
	// And the overview: envoys and jobs.
	overview := strings.TrimSuffix(shot, ".png") + "-overview.png"
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`location.hash = '#/'`), chromedp.WaitVisible(chromedp.CSS(`#overview`))); err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, ctx, overview)
	if errs := pageErrors(); len(errs) > 0 {
		t.Fatalf("the page logged errors:\n%s", strings.Join(errs, "\n"))
	}
}

func saveScreenshot(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
