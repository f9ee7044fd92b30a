package queue

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseKernelStats(t *testing.T) {
	const give = "  100  12345     0 2  4096     0     0        7  1\n" +
		"  101 4294967295     3 2   256    17     5      900  1\n"
	tests := []struct {
		name    string
		queue   uint16
		want    KernelStats
		wantErr error
	}{
		{name: "first", queue: 100, want: KernelStats{Queue: 100, PortID: 12345, CopyRange: 4096, IDSequence: 7}},
		{name: "second", queue: 101, want: KernelStats{Queue: 101, PortID: 4294967295, Waiting: 3, CopyRange: 256, QueueDropped: 17, UserDropped: 5, IDSequence: 900}},
		{name: "absent", queue: 102, wantErr: ErrQueueNotBound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKernelStats(strings.NewReader(give), tt.queue)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("stats (-want +got):\n%s", diff)
			}
		})
	}
}
