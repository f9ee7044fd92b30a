package gate

import "sync"

// fifoMap is a map bounded in entries that forgets the oldest inserted
// key first: the store under the outcome and shared-secret caches. It is
// safe for concurrent use; every call takes its lock briefly, never
// around the work whose result it holds.
type fifoMap[K comparable, V any] struct {
	mu      sync.Mutex
	entries map[K]V
	ring    []K // insertion order; ring[next] is the oldest once full
	next    int
}

// newFIFOMap returns a map of at most max entries (max > 0).
func newFIFOMap[K comparable, V any](max int) *fifoMap[K, V] {
	return &fifoMap[K, V]{entries: make(map[K]V, max), ring: make([]K, 0, max)}
}

// get returns the value of key, if it is held.
func (m *fifoMap[K, V]) get(key K) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.entries[key]
	return v, ok
}

// put sets key's value, forgetting the oldest key when the map is full
// and key is new.
func (m *fifoMap[K, V]) put(key K, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[key]; ok {
		m.entries[key] = v
		return
	}
	if len(m.ring) < cap(m.ring) {
		m.ring = append(m.ring, key)
	} else {
		delete(m.entries, m.ring[m.next])
		m.ring[m.next] = key
		m.next = (m.next + 1) % len(m.ring)
	}
	m.entries[key] = v
}

// reset forgets every entry.
func (m *fifoMap[K, V]) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.entries)
	m.ring = m.ring[:0]
	m.next = 0
}

// len returns how many entries are held.
func (m *fifoMap[K, V]) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries)
}
