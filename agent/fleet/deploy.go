package fleet

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-edge/vigil/agent/internal/strictjson"
)

// The deploy-model command carries a model to a device in steps, each one
// message on <prefix>/<device>/cmd/deploy-model answered on its reply topic:
//
//	{"id","op":"begin","name","version","manifest":b64,"signature"?:b64,"size","sha256","chunk_size"}
//	{"id","op":"chunk","name","version","index","sha256","data":b64}
//	{"id","op":"status","name","version"}
//	{"id","op":"commit","name","version"}
//	{"id","op":"abort","name","version"}
//
// begin states the transfer (the manifest, NAME.json's bytes, and its
// signature, NAME.sig's bytes; size and sha256 of NAME.tflite; the chunk
// size); chunk i carries bytes [i*chunk_size, (i+1)*chunk_size) of
// NAME.tflite with their sha256; status asks which chunks are missing;
// commit lands the model; abort forgets the transfer.

// Deploy operations.
const (
	OpBegin  = "begin"
	OpChunk  = "chunk"
	OpStatus = "status"
	OpCommit = "commit"
	OpAbort  = "abort"
)

// Limits of a deployment.
const (
	DefaultChunk     = 64 << 10
	MinChunk         = 1 << 10
	MaxManifestBytes = 64 << 10
	MaxModelBytes    = 256 << 20
	maxVersionLen    = 64
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Deploy is one decoded deploy-model message; the fields an op does not
// take are zero.
type Deploy struct {
	ID      string `json:"id"`
	Op      string `json:"op"`
	Name    string `json:"name"`
	Version string `json:"version"`

	// begin
	Manifest  []byte `json:"manifest,omitempty"`
	Signature []byte `json:"signature,omitempty"`
	Size      int64  `json:"size,omitempty"`
	SHA256    string `json:"sha256,omitempty"` // begin: NAME.tflite's; chunk: the chunk's
	ChunkSize int    `json:"chunk_size,omitempty"`

	// chunk
	Index int    `json:"index,omitempty"`
	Data  []byte `json:"data,omitempty"`
}

// Ref is name@version, the transfer's and the landed model's name.
func (d Deploy) Ref() string { return d.Name + "@" + d.Version }

// Chunks is the number of chunks of a begin.
func (d Deploy) Chunks() int {
	if d.ChunkSize <= 0 {
		return 0
	}
	return int((d.Size + int64(d.ChunkSize) - 1) / int64(d.ChunkSize))
}

// Encode returns the message's payload. It takes only the op's fields.
func (d Deploy) Encode() []byte {
	m := map[string]any{"id": d.ID, "op": d.Op, "name": d.Name, "version": d.Version}
	switch d.Op {
	case OpBegin:
		m["manifest"] = base64.StdEncoding.EncodeToString(d.Manifest)
		if d.Signature != nil {
			m["signature"] = base64.StdEncoding.EncodeToString(d.Signature)
		}
		m["size"], m["sha256"], m["chunk_size"] = d.Size, d.SHA256, d.ChunkSize
	case OpChunk:
		m["index"], m["sha256"] = d.Index, d.SHA256
		m["data"] = base64.StdEncoding.EncodeToString(d.Data)
	}
	b, _ := json.Marshal(m)
	return b
}

// DecodeDeploy decodes a deploy-model payload strictly: exactly the op's
// fields, each of its type and within its limits.
func DecodeDeploy(payload []byte) (Deploy, error) {
	common := []string{"id", "op", "name", "version"}
	f, err := object(payload, append(common, "manifest", "signature", "size", "sha256", "chunk_size", "index", "data")...)
	if err != nil {
		return Deploy{}, err
	}
	d := Deploy{ID: f.Str("id", true, MaxIDLen), Op: f.Str("op", true, 16)}
	d.Name = f.Str("name", true, 64)
	d.Version = f.Str("version", true, maxVersionLen)
	if d.Name != "" && !nameRE.MatchString(d.Name) {
		f.Bad("name", "may only hold letters, digits, '.', '_' and '-'")
	}
	if d.Version != "" && !nameRE.MatchString(d.Version) {
		f.Bad("version", "may only hold letters, digits, '.', '_' and '-'")
	}
	var want []string
	switch d.Op {
	case OpBegin:
		want = []string{"manifest", "signature", "size", "sha256", "chunk_size"}
		d.Manifest = b64(f, "manifest", true, MaxManifestBytes)
		d.Signature = b64(f, "signature", false, 1024)
		d.Size = f.Int("size", true, 1, MaxModelBytes, 0)
		d.SHA256 = hash(f, "sha256")
		d.ChunkSize = int(f.Int("chunk_size", true, MinChunk, MaxChunk, 0))
	case OpChunk:
		want = []string{"index", "sha256", "data"}
		d.Index = int(f.Int("index", true, 0, MaxModelBytes/MinChunk, 0))
		d.SHA256 = hash(f, "sha256")
		d.Data = b64(f, "data", true, MaxChunk)
	case OpStatus, OpCommit, OpAbort:
	case "":
	default:
		f.Bad("op", "%q is not one of begin, chunk, status, commit, abort", d.Op)
	}
	for _, k := range f.Keys() {
		if !slices.Contains(common, k) && !slices.Contains(want, k) && d.Op != "" {
			f.Bad(k, "not taken by op %q", d.Op)
		}
	}
	return d, f.Err()
}

// b64 decodes a standard base64 string field of at most max bytes.
func b64(f *strictjson.Object, key string, required bool, max int) []byte {
	v, ok := f.Raw(key, required)
	if !ok {
		return nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		f.Bad(key, "want a base64 string")
		return nil
	}
	if len(s) > base64.StdEncoding.EncodedLen(max) {
		f.Bad(key, "more than %d bytes", max)
		return nil
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		f.Bad(key, "not standard base64: %v", err)
		return nil
	}
	if len(b) == 0 {
		if required {
			f.Bad(key, "must not be empty")
		}
		return nil // an empty signature is no signature
	}
	return b
}

// hash decodes a required sha256 field: 64 lowercase hex digits.
func hash(f *strictjson.Object, key string) string {
	s := f.Str(key, true, 64)
	if s == "" {
		return ""
	}
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 || strings.ToLower(s) != s {
		f.Bad(key, "want 64 lowercase hex digits")
		return ""
	}
	return s
}

// FormatMissing writes chunk indexes as ranges: "0,3-7,9"; "" for none.
func FormatMissing(idx []int) string {
	var b strings.Builder
	for i := 0; i < len(idx); {
		j := i
		for j+1 < len(idx) && idx[j+1] == idx[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(idx[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(idx[j]))
		}
		i = j + 1
	}
	return b.String()
}

// ParseMissing reads FormatMissing's ranges, at most max indexes.
func ParseMissing(s string, max int) ([]int, error) {
	var out []int
	if s == "" {
		return nil, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("missing chunks: %q", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("missing chunks: %q", part)
			}
		}
		if len(out) > 0 && a <= out[len(out)-1] {
			return nil, fmt.Errorf("missing chunks: %q out of order", part)
		}
		if len(out)+(b-a+1) > max {
			return nil, fmt.Errorf("missing chunks: more than %d", max)
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}
