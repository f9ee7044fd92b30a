package rules

// ForwardsUnder is forwardsUnder, for the external tests.
var ForwardsUnder = forwardsUnder
