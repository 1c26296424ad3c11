package trigger

import (
	"context"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// chromiumPath finds Debian's chromium (scripts/test installs it). Without
// it the browser tests skip, except under CI where they must run.
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	for _, name := range []string{os.Getenv("CHROMIUM"), "chromium", "chromium-browser"} {
		if name == "" {
			continue
		}
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("chromium not found under CI: install Debian's chromium package (scripts/test does) or set CHROMIUM")
	}
	tb.Skip("chromium not found: install Debian's chromium package (apt-get install -y chromium) to run the console's browser tests")
	return ""
}

// newChromium starts one headless Chromium for a test; each scenario opens
// its own browser context (its own cookies) with tab.
func newChromium(tb testing.TB) (tab func() context.Context) {
	tb.Helper()
	path := chromiumPath(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1400, 900),
	)
	tb.Cleanup(cancelAlloc)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	tb.Cleanup(cancelBrowser)
	if err := chromedp.Do(browserCtx); err != nil {
		tb.Fatalf("start chromium %s: %v", path, err)
	}
	return func() context.Context {
		tabCtx, cancelTab := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
		tb.Cleanup(cancelTab)
		return tabCtx
	}
}

// logIn opens the console and submits key in the login form.
func logIn(url, key string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Navigate(url+"/console"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Click(chromedp.CSS("#login")),
	)
}

func cell(ingestion, date string) string {
	return `tr[data-ingestion="` + ingestion + `"] a[data-date="` + date + `"]`
}

// page reads what a person sees on the current page.
type page struct {
	tb  testing.TB
	ctx context.Context
}

func (p page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.tb.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.tb.Fatal(err)
	}
}

func (p page) text(sel string) string {
	p.tb.Helper()
	s, err := chromedp.Run(p.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		p.tb.Fatalf("read %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

func eval[T any](p page, expr string) T {
	p.tb.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.tb.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// TestConsoleInChromium drives the console as a person would: log in,
// read the colours of the grid, open a day, start a backfill and a reload.
func TestConsoleInChromium(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	seedConsole(t, f.store)
	srv := httptest.NewServer(f.h)
	t.Cleanup(srv.Close)
	tab := newChromium(t)

	t.Run("a wrong key is refused", func(t *testing.T) {
		p := page{t, tab()}
		p.do(logIn(srv.URL, "sk_live_not_a_key"), chromedp.WaitVisible(chromedp.CSS("#login-error")))
		msg := p.text("#login-error")
		cells := eval[int](p, `document.querySelectorAll("a.cell").length`)
		if msg != "That API key is not valid." || cells != 0 {
			t.Fatalf("message %q and %d cells, want a refusal and no grid", msg, cells)
		}
	})

	t.Run("the grid, a day, a backfill and a reload", func(t *testing.T) {
		p := page{t, tab()}
		p.do(logIn(srv.URL, keyAlpha), chromedp.WaitVisible(chromedp.CSS("#grid")))
		if got := p.text("#project"); got != "alpha" {
			t.Errorf("header names project %q, want alpha", got)
		}
		// What a person sees is the colour: check the computed background
		// of each seeded day.
		wantColour := map[string]string{
			"loaded":       "rgb(47, 158, 68)",
			"loaded-empty": "rgb(140, 233, 154)",
			"failed":       "rgb(224, 49, 49)",
			"running":      "rgb(28, 126, 214)",
			"not-loaded":   "rgb(222, 226, 230)",
		}
		days := append([]consoleDay(nil), consoleSeed[:4]...)
		days = append(days, consoleDay{project: "alpha", ingestion: "ev_daily", date: "2024-03-04", wantClass: "not-loaded"})
		for _, d := range days {
			colour := eval[string](p, `getComputedStyle(document.querySelector('`+cell(d.ingestion, d.date)+`')).backgroundColor`)
			title := eval[string](p, `document.querySelector('`+cell(d.ingestion, d.date)+`').title`)
			if colour != wantColour[d.wantClass] {
				t.Errorf("%s %s is %s, want %s (%s)", d.ingestion, d.date, colour, wantColour[d.wantClass], d.wantClass)
			}
			if !strings.HasPrefix(title, d.date+": ") {
				t.Errorf("%s %s tooltip %q", d.ingestion, d.date, title)
			}
		}

		p.do(chromedp.Click(chromedp.CSS(cell("ev_daily", "2024-03-05"))), chromedp.WaitVisible(chromedp.CSS("#count-extracted")))
		status, extracted, loaded, rejected := p.text("#status"), p.text("#count-extracted"), p.text("#count-loaded"), p.text("#count-rejected")
		warehouse, reasons := p.text("#warehouse-now"), p.text("#rejected tbody")
		if status != "loaded" || extracted != "11" || loaded != "8" || rejected != "3" || !strings.HasPrefix(warehouse, "12") {
			t.Errorf("day shows status %q extracted %q loaded %q rejected %q warehouse now %q; want loaded 11 8 3 12",
				status, extracted, loaded, rejected, warehouse)
		}
		if !strings.Contains(reasons, "missing_event_name") || !strings.Contains(reasons, "bad_timestamp") {
			t.Errorf("rejected reasons %q", reasons)
		}
		if runs := p.text("article.run h3"); !strings.Contains(runs, "run-ev_daily-2024-03-05") || !strings.Contains(runs, "scheduled") {
			t.Errorf("run history shows %q", runs)
		}

		before := len(f.dispatch.Calls())
		p.do(chromedp.Click(chromedp.CSS("#reload")), chromedp.WaitVisible(chromedp.CSS("#started")))
		started := p.text("#started tbody")
		calls := f.dispatch.Calls()[before:]
		if len(calls) != 1 || calls[0].Trigger != vocab.TriggerReload || calls[0].Date != "2024-03-05" || calls[0].Ingestion != "ev_daily" {
			t.Fatalf("reload dispatched %+v", calls)
		}
		if !strings.Contains(started, "run-") || !strings.Contains(started, "2024-03-05") {
			t.Errorf("reload result shows %q", started)
		}

		before = len(f.dispatch.Calls())
		p.do(
			chromedp.Navigate(srv.URL+"/console"),
			chromedp.WaitVisible(chromedp.CSS("#backfill-form")),
			chromedp.SetValue(chromedp.CSS("#backfill-source"), "mt_api"),
			chromedp.SetValue(chromedp.CSS("#backfill-start"), "2024-03-01"),
			chromedp.SetValue(chromedp.CSS("#backfill-end"), "2024-03-02"),
			chromedp.Click(chromedp.CSS("#backfill")),
			chromedp.WaitVisible(chromedp.CSS("#started")))
		started = p.text("#started tbody")
		calls = f.dispatch.Calls()[before:]
		if len(calls) != 2 || calls[0].Ingestion != "mt_api" || calls[0].Trigger != vocab.TriggerBackfill ||
			calls[0].Date != "2024-03-01" || calls[1].Date != "2024-03-02" {
			t.Fatalf("backfill dispatched %+v", calls)
		}
		for _, id := range []string{"run-" + strconv.Itoa(before+1) + "-mt_api-2024-03-01", "run-" + strconv.Itoa(before+2) + "-mt_api-2024-03-02"} {
			if !strings.Contains(started, id) {
				t.Errorf("backfill result %q lacks run %s", started, id)
			}
		}
	})

	t.Run("another project's key sees only its own ingestions", func(t *testing.T) {
		p := page{t, tab()}
		p.do(logIn(srv.URL, keyBeta), chromedp.WaitVisible(chromedp.CSS("#grid")))
		rows := eval[[]string](p, `[...document.querySelectorAll("tr[data-ingestion]")].map(r => r.dataset.ingestion)`)
		if strings.Join(rows, ",") != "beta_ev_api" {
			t.Fatalf("beta sees ingestions %v, want only beta_ev_api", rows)
		}
		p.do(chromedp.Navigate(srv.URL+"/console/ingestions/ev_daily/days/2024-03-05"), chromedp.WaitVisible(chromedp.CSS("#action-error")))
		if title := p.text("h1"); title != "Not found" {
			t.Fatalf("beta opening alpha's day sees %q, want Not found", title)
		}
	})
}
