package daemon

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"sknock/gate"
	"sknock/internal/testenv"
)

// TestCountersRenderedAlike checks that every counter of the list shows
// in the counters line and in status, and every exported one in the
// Prometheus exposition, under its one name.
func TestCountersRenderedAlike(t *testing.T) {
	var logs testenv.SyncBuffer
	d := &daemon{ops: newOpsStats(), log: newLoggerAt(logLevel("info"), &logs)}
	d.engine = gate.NewEngine(gate.Config{Policy: gate.PolicyDrop}, nil)
	d.ops.trustReloaded(nil)

	d.logStats()
	var line map[string]any
	if err := json.Unmarshal([]byte(logs.String()), &line); err != nil {
		t.Fatalf("counters line %q: %v", logs.String(), err)
	}
	status := statusCounters(d.read())
	reg, err := newMetricsRegistry(d, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
	}
	for _, c := range counters {
		if _, ok := line[c.name]; !ok {
			t.Errorf("counter %s is not in the counters line: %s", c.name, logs.String())
		}
		name := c.name
		if c.status != "" {
			name = c.status
		}
		found := false
		for key := range status {
			found = found || key == name || len(c.labels) > 0 && strings.HasPrefix(key, name+"_")
		}
		if !found && !c.sparse {
			t.Errorf("counter %s is not in status: %v", name, status)
		}
		if c.metric == "" {
			continue
		}
		if series[c.metric] == 0 {
			t.Errorf("counter %s: metric %s is not exported", c.name, c.metric)
		}
	}
	if status["trust_reloads"] != 1 || line["trust_reloads"] != 1.0 {
		t.Errorf("trust_reloads: status %d, line %v; want 1 in both", status["trust_reloads"], line["trust_reloads"])
	}
}
