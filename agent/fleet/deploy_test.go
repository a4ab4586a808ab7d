package fleet

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func TestDeployRoundTrip(t *testing.T) {
	for _, d := range []Deploy{
		{ID: "1", Op: OpBegin, Name: "pump8", Version: "2", Manifest: []byte(`{"a":1}`), Signature: []byte("sig"), Size: 70000, SHA256: strings.Repeat("ab", 32), ChunkSize: 65536},
		{ID: "2", Op: OpBegin, Name: "pump8", Version: "2", Manifest: []byte(`{}`), Size: 1, SHA256: strings.Repeat("0", 64), ChunkSize: MinChunk},
		{ID: "3", Op: OpChunk, Name: "pump8", Version: "2", Index: 1, SHA256: strings.Repeat("cd", 32), Data: []byte("xyz")},
		{ID: "4", Op: OpStatus, Name: "pump8", Version: "2"},
		{ID: "5", Op: OpCommit, Name: "a.b_c-d", Version: "1.0"},
		{ID: "6", Op: OpAbort, Name: "pump8", Version: "2"},
	} {
		got, err := DecodeDeploy(d.Encode())
		if err != nil || got.ID != d.ID || got.Op != d.Op || got.Size != d.Size || got.Index != d.Index ||
			!bytes.Equal(got.Manifest, d.Manifest) || !bytes.Equal(got.Signature, d.Signature) || !bytes.Equal(got.Data, d.Data) {
			t.Errorf("%s: %+v, %v", d.Encode(), got, err)
		}
	}
	if n := (Deploy{Size: 70000, ChunkSize: 65536}).Chunks(); n != 2 {
		t.Errorf("Chunks = %d", n)
	}
}

func TestDecodeDeployRefuses(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for _, tt := range []struct{ payload, want string }{
		{`{"id":"1","op":"begin","name":"m","version":"1","manifest":"e30=","size":10,"sha256":"` + h + `","chunk_size":100}`, `field "chunk_size": 100 is out of range`},
		{`{"id":"1","op":"begin","name":"m","version":"1","manifest":"e30=","size":0,"sha256":"` + h + `","chunk_size":1024}`, `field "size": 0 is out of range`},
		{`{"id":"1","op":"begin","name":"m","version":"1","manifest":"e30","size":5,"sha256":"` + h + `","chunk_size":1024}`, `field "manifest": not standard base64`},
		{`{"id":"1","op":"chunk","name":"m","version":"1","index":0,"sha256":"` + strings.ToUpper(h) + `","data":"eA=="}`, `field "sha256": want 64 lowercase hex digits`},
		{`{"id":"1","op":"chunk","name":"m","version":"1","index":-1,"sha256":"` + h + `","data":"eA=="}`, `field "index": -1 is out of range`},
		{`{"id":"1","op":"status","name":"m","version":"1","index":3}`, `field "index": not taken by op "status"`},
		{`{"id":"1","op":"format","name":"m","version":"1"}`, `"format" is not one of`},
		{`{"id":"1","op":"commit","name":"../m","version":"1"}`, `field "name": may only hold`},
		{`{"id":"1","op":"commit","name":"m","version":"1/2"}`, `field "version": may only hold`},
		{`{"id":"1","op":"commit","name":"m"}`, `missing field "version"`},
	} {
		if _, err := DecodeDeploy([]byte(tt.payload)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.payload, err, tt.want)
		}
	}
}

func TestMissingRanges(t *testing.T) {
	for _, idx := range [][]int{nil, {0}, {0, 1, 2}, {0, 2, 3, 4, 9}, {5, 7}} {
		s := FormatMissing(idx)
		got, err := ParseMissing(s, 100)
		if err != nil || !slices.Equal(got, idx) {
			t.Errorf("%v -> %q -> %v, %v", idx, s, got, err)
		}
	}
	for _, bad := range []string{"a", "3-1", "2,1", "0-1000", "-1"} {
		if _, err := ParseMissing(bad, 100); err == nil {
			t.Errorf("ParseMissing(%q) accepted", bad)
		}
	}
}

// FuzzDecodeDeploy: never panics; what it accepts is within the limits and
// decodes the same once encoded again.
func FuzzDecodeDeploy(f *testing.F) {
	h := strings.Repeat("ab", 32)
	f.Add([]byte(`{"id":"1","op":"begin","name":"m","version":"1","manifest":"e30=","size":10,"sha256":"` + h + `","chunk_size":1024}`))
	f.Add([]byte(`{"id":"1","op":"chunk","name":"m","version":"1","index":0,"sha256":"` + h + `","data":"eA=="}`))
	f.Add([]byte(`{"id":"1","op":"status","name":"m","version":"1"}`))
	f.Add([]byte(`{"id":"1","op":"commit","name":"m","version":"1","x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDeploy(b)
		if err != nil {
			return
		}
		if d.ID == "" || !nameRE.MatchString(d.Name) || !nameRE.MatchString(d.Version) {
			t.Fatalf("accepted %+v", d)
		}
		if d.Op == OpBegin && (d.ChunkSize < MinChunk || d.ChunkSize > MaxChunk || d.Size < 1 || d.Size > MaxModelBytes || len(d.Manifest) == 0) {
			t.Fatalf("accepted begin %+v", d)
		}
		if d.Op == OpChunk && (len(d.Data) == 0 || len(d.Data) > MaxChunk || d.Index < 0) {
			t.Fatalf("accepted chunk %+v", d)
		}
		again, err := DecodeDeploy(d.Encode())
		if err != nil || again.Op != d.Op || again.Size != d.Size || !bytes.Equal(again.Data, d.Data) || !bytes.Equal(again.Manifest, d.Manifest) {
			t.Fatalf("re-decoded %+v, %v", again, err)
		}
	})
}

func FuzzParseMissing(f *testing.F) {
	f.Add("0,3-7,9")
	f.Add("")
	f.Add("5-3")
	f.Fuzz(func(t *testing.T, s string) {
		idx, err := ParseMissing(s, 1000)
		if err != nil {
			return
		}
		if len(idx) > 1000 || !slices.IsSorted(idx) {
			t.Fatalf("%q -> %v", s, idx)
		}
		again, err := ParseMissing(FormatMissing(idx), 1000)
		if err != nil || !slices.Equal(again, idx) {
			t.Fatalf("round trip of %v: %v, %v", idx, again, err)
		}
	})
}
