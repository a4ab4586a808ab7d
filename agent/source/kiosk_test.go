package source

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"time"
)

func TestWriteEventsJSONLDeterministic(t *testing.T) {
	o := DefaultKioskOptions()
	o.Users, o.StruggleRate = 6, 0.2
	o2 := o
	o2.Seed = 9
	a := checkDeterministic(t, o, o2, func(w io.Writer, o KioskOptions) error { return WriteEventsJSONL(w, 3000, o) })

	// Every line decodes as POST /v1/events would; times never go back;
	// ids are unique; struggling users fail the form ≥ 3 times quickly.
	sc := bufio.NewScanner(bytes.NewReader(a))
	var last time.Time
	ids := map[string]bool{}
	names := map[string]int{}
	type userState struct {
		errs    []time.Time
		labeled bool
		ended   bool
	}
	users := map[string]*userState{}
	n := 0
	for sc.Scan() {
		n++
		lim := DefaultEventLimits()
		lim.MaxFuture = 0 // recorded events, read with no clock
		evs, rej, err := decodeEvents(sc.Bytes(), time.Time{}, lim)
		if err != nil || len(rej) > 0 || len(evs) != 1 {
			t.Fatalf("line %d: %v %v", n, err, rej)
		}
		ev := evs[0].event
		if ev.Time.Before(last) {
			t.Fatalf("line %d goes back in time", n)
		}
		last = ev.Time
		if ids[ev.ID] {
			t.Fatalf("line %d: duplicate id %s", n, ev.ID)
		}
		ids[ev.ID] = true
		names[ev.Name]++
		if ev.Properties["kiosk_id"] == nil {
			t.Fatalf("line %d: no kiosk_id", n)
		}
		var lab struct{ Anomaly int }
		json.Unmarshal(sc.Bytes(), &lab)
		u := users[ev.UserID]
		if u == nil {
			u = &userState{}
			users[ev.UserID] = u
		}
		if ev.Name == EventFormError {
			u.errs = append(u.errs, ev.Time)
		}
		u.labeled = u.labeled || lab.Anomaly == 1
		u.ended = u.ended || ev.Name == EventSessionEnd
	}
	if n != 3000 {
		t.Fatalf("%d lines", n)
	}
	for _, name := range []string{EventPageView, EventFormStart, EventFormSubmit, EventFormError, EventPaymentOK, EventPaymentFailed, EventHelpClick, EventSessionEnd} {
		if names[name] == 0 {
			t.Errorf("no %s in 3000 events: %v", name, names)
		}
	}
	struggles := 0
	for id, u := range users {
		if !u.ended {
			continue // cut off by the end of the file
		}
		if !u.labeled {
			if len(u.errs) > 1 {
				t.Errorf("user %s: %d form errors but not labelled", id, len(u.errs))
			}
			continue
		}
		struggles++
		if len(u.errs) < 3 {
			t.Errorf("struggling user %s: %d form errors", id, len(u.errs))
		} else if d := u.errs[2].Sub(u.errs[0]); d > 2*time.Minute {
			t.Errorf("struggling user %s: 3 errors over %v", id, d)
		}
	}
	if struggles == 0 || struggles > len(users)/2 {
		t.Errorf("%d struggling users of %d", struggles, len(users))
	}
}

func TestKioskRun(t *testing.T) {
	clock := newFakeClock()
	sink := &fakeSink{}
	o := DefaultKioskOptions()
	o.Events, o.Clock, o.Faults, o.Speed = 200, clock, true, 2
	start := clock.Now()
	runNew(t, NewKioskSimulator, o, sink)
	ins := sink.Inputs()
	if len(ins) != 200 {
		t.Fatalf("%d inputs", len(ins))
	}
	lastOff := ins[len(ins)-1].Time.Sub(start)
	// At speed 2 the clock advanced half the simulated span.
	if got := clock.Now().Sub(start); got != lastOff/2 {
		t.Errorf("clock advanced %v for %v of events at speed 2", got, lastOff)
	}
	// Faults: the first kiosk's first user fails the form 3 times early.
	errs := 0
	var third time.Duration
	for _, in := range ins {
		if in.Event == nil || in.Values != nil || !in.Time.Equal(in.Event.Time) {
			t.Fatalf("input %+v", in)
		}
		if in.Event.Name == EventFormError && in.Event.UserID == ins[0].Event.UserID {
			errs++
			if errs == 3 {
				third = in.Time.Sub(start)
			}
		}
	}
	if errs < 3 || third > 45*time.Second {
		t.Errorf("first user: %d form errors, the third at %v", errs, third)
	}
}

func TestKioskOptionsErrors(t *testing.T) {
	for _, tt := range []struct {
		edit  func(*KioskOptions)
		field string
	}{
		{func(o *KioskOptions) { o.Users = 0 }, "Users"},
		{func(o *KioskOptions) { o.Speed = -1 }, "Speed"},
		{func(o *KioskOptions) { o.StruggleRate = 2 }, "StruggleRate"},
	} {
		o := DefaultKioskOptions()
		tt.edit(&o)
		if _, err := NewKioskSimulator(o, &fakeSink{}); err == nil || !bytes.Contains([]byte(err.Error()), []byte(tt.field)) {
			t.Errorf("error %v, want one naming %s", err, tt.field)
		}
	}
}
