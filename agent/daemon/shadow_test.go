package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models"
)

// TestShadowPromotesOrRollsBack (issue 18 item 2): with models.shadow on,
// a deployed model first runs in shadow on the same windows: one that
// behaves like the serving model is promoted by itself; one that is over
// its threshold on every window is rolled back by itself within its
// shadow run while the serving model's scores keep flowing; health shows
// the runs; promote and rollback decide by command.
func TestShadowPromotesOrRollsBack(t *testing.T) {
	pub, priv, _ := models.GenerateKey()
	cfgPath, _ := shadowConfig(t, "", 40, pub)
	d, stop := startDaemon(t, cfgPath)
	configured := d.effective()["pump1"].Model

	msg := deployDirect(t, d, newVersion(t, "5", priv, "pump8", 0), "5")
	if !strings.Contains(msg, "shadow run on stream pump1") {
		t.Fatalf("commit: %q", msg)
	}
	if e := d.effective()["pump1"]; e.Model != configured {
		t.Fatalf("the shadow model serves at once: %+v", e)
	}
	waitFor(t, 60*time.Second, func() bool { return strings.HasPrefix(d.deploy.deployments()["pump8@5"], "serving") })
	if e := d.effective()["pump1"]; e.Model != "pump8@5" || e.ModelFrom != "deployment" {
		t.Fatalf("after the promotion: %+v", e)
	}
	if got := d.deploy.deployments()["pump8@5"]; !strings.Contains(got, "promoted, automatic") {
		t.Errorf("outcome: %q", got)
	}

	// A model over its threshold on every window.
	deployDirect(t, d, alwaysOver(t, "6", priv), "6")
	committed := time.Now()
	waitFor(t, 60*time.Second, func() bool { return strings.HasPrefix(d.deploy.deployments()["pump8@6"], "rolled-back") })
	t.Logf("rolled back %v after the commit (40 windows of shadow at 40 windows/s)", time.Since(committed).Round(time.Millisecond))
	if got := d.deploy.deployments()["pump8@6"]; !strings.Contains(got, "rolled-back on pump1 (automatic") || !strings.Contains(got, "100.0% over threshold") {
		t.Errorf("outcome: %q", got)
	}
	if e := d.effective()["pump1"]; e.Model != "pump8@5" {
		t.Fatalf("after the rollback: %+v", e)
	}
	scores := d.Stats().Scores
	waitFor(t, 30*time.Second, func() bool { return d.Stats().Scores > scores })

	// By command: rollback during a shadow run, then promote. A reload
	// makes the runs long enough that no verdict comes first.
	rewrite(t, cfgPath, "shadow: {windows: 40,", "shadow: {windows: 100000000,")
	if err := d.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	deployDirect(t, d, newVersion(t, "7", priv, "pump8", 0), "7")
	if s := d.shadowState()["pump1"]; s == nil || s.Model != "pump8@7" || s.Serving != "pump8@5" {
		t.Fatalf("health shadow: %+v", s)
	}
	if rep := command(t, d, cmdRollback, `{"id":"r","stream":"pump1"}`); !rep.OK || !strings.Contains(rep.Message, "pump8@7 rolled back (by command)") {
		t.Fatalf("rollback: %+v", rep)
	}
	deployDirect(t, d, newVersion(t, "8", priv, "pump8", 0), "8")
	if rep := command(t, d, cmdPromote, `{"id":"p","stream":"pump1"}`); !rep.OK || d.effective()["pump1"].Model != "pump8@8" {
		t.Fatalf("promote: %+v, %+v", rep, d.effective()["pump1"])
	}
	if rep := command(t, d, cmdPromote, `{"id":"p2","stream":"pump1"}`); rep.OK {
		t.Fatalf("promote without a shadow: %+v", rep)
	}
	// A shadow run survives a restart.
	deployDirect(t, d, newVersion(t, "9", priv, "pump8", 0), "9")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d, _ = startDaemon(t, cfgPath)
	if s := d.shadowState()["pump1"]; s == nil || s.Model != "pump8@9" || d.effective()["pump1"].Model != "pump8@8" {
		t.Fatalf("after restart: shadow %+v, serving %+v", s, d.effective()["pump1"])
	}
	waitFor(t, 30*time.Second, func() bool { return d.shadowState()["pump1"].Windows > 0 })
}
