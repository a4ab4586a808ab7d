package daemon

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// TestBrowserBeaconEventsAreScored serves a kiosk page to headless Chromium;
// the page sends behaviour events to Vigil with navigator.sendBeacon (a
// text/plain POST from another origin), and the test checks that Vigil
// accepted and scored them.
func TestBrowserBeaconEventsAreScored(t *testing.T) {
	testkit.Chromium(t) // skips early without one
	// The page's server starts once Vigil's address is known: its handler
	// is set before any request can reach it.
	page := httptest.NewUnstartedServer(nil)
	defer page.Close()
	pageURL := "http://" + page.Listener.Addr().String()
	cfgPath, _ := testConfig(t, 100, "")
	b, _ := os.ReadFile(cfgPath)
	// The page's origin may post events.
	cfg := strings.Replace(string(b), `http: {listen: "127.0.0.1:0"}`, fmt.Sprintf(`http: {listen: "127.0.0.1:0", cors_origins: [%q]}`, pageURL), 1)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	d, _ := startDaemon(t, cfgPath)

	const events = 8
	html := fmt.Sprintf(`<!doctype html><title>kiosk</title><body>
<script>
const t0 = Date.now() - 60000;
const evs = [];
for (let i = 0; i < %d; i++) {
  evs.push({event_id: "beacon-" + i, event_name: i %% 2 ? "form_error" : "page_view",
            timestamp: new Date(t0 + i * 2000).toISOString(), user_id: "kiosk-user-7",
            properties: {page: "/form"}});
}
const ok = navigator.sendBeacon("http://%s/v1/events", JSON.stringify(evs));
document.body.textContent = ok ? "beacon queued" : "beacon refused";
</script></body>`, events, d.Addr())
	page.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, html)
	})
	page.Start()

	out := testkit.Headless(t, pageURL, "--dump-dom")
	if !strings.Contains(out, "beacon queued") {
		t.Fatalf("the page did not queue the beacon:\n%s", out)
	}
	waitFor(t, 30*time.Second, func() bool {
		st := d.Stats().Streams["web"]
		return st.Windows >= 1 && st.Keys == 1
	})
	st := d.Stats()
	if st.Streams["web"].Windows < 1 {
		t.Fatalf("web stream: %+v", st.Streams["web"])
	}
}
