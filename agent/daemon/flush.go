package daemon

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/vigil-edge/vigil/buffer"
)

// flush syncs the buffer to disk (the MQTT flush command) and says, per
// lane, how many records the fsync made durable, the last durable sequence
// number and the records held. A memory buffer has no disk: the reply says
// so rather than claiming durability.
func (d *Daemon) flush(ctx context.Context) (string, error) {
	s, ok := d.buf.(buffer.Syncer)
	if !ok {
		return "", errors.New("this buffer cannot be synced")
	}
	res, err := s.Sync(ctx)
	if err != nil {
		return "", fmt.Errorf("flush: %w", err)
	}
	return describeSync(res), nil
}

func describeSync(res buffer.SyncResult) string {
	var parts []string
	var total uint64
	for _, name := range slices.Sorted(maps.Keys(res.Lanes)) {
		l := res.Lanes[name]
		total += l.Synced
		if res.Disk {
			parts = append(parts, fmt.Sprintf("%s: %d synced, durable to seq %d, %d held", name, l.Synced, l.Durable, l.Records))
		} else {
			parts = append(parts, fmt.Sprintf("%s: %d held", name, l.Records))
		}
	}
	if !res.Disk {
		return "memory buffer: nothing on disk to sync (records are lost on restart); " + strings.Join(parts, "; ")
	}
	return fmt.Sprintf("buffer synced to disk: %d records in %d lanes; %s", total, len(res.Lanes), strings.Join(parts, "; "))
}
