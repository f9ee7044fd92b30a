package rules

// ApplyBoth exposes applyBoth to the tests of package rules_test.
var ApplyBoth = applyBoth
