package config

import (
	"errors"
	"testing"
)

// TestSyntaxHints: each syntax error HCL's parser reports gets the hint for
// what it met instead, chosen from the tokens at the error. Where HCL
// reports one mistake twice (a string broken by a newline), both are listed.
func TestSyntaxHints(t *testing.T) {
	tests := []struct {
		name, src string
		want      []string
	}{
		{"a word alone", "foo\n", []string{hintLine}},
		{"a number where a name goes", "1 = 2\n", []string{hintLine}},
		{"a dotted name", "a.b = 1\n", []string{hintLine}},
		{"a stray closing brace", "}\n", []string{hintLine}},
		{"an unclosed block", "a {\n  b = 1\n", []string{hintCloseBrace}},
		{"an unclosed list", "a = [1, 2\n", []string{hintCloseBracket}},
		{"an unclosed object at the end", "a = {\n", []string{hintCloseBrace}},
		{"an unterminated heredoc", "a = <<EOT\nx\n", []string{hintCloseHeredoc}},
		{"an invalid character", "a = 1 @\n", []string{hintCharacter, hintCharacter}},
		{"an operator HCL lacks", "a = 1 ~\n", []string{hintOperator, hintOperator}},
		{"two attributes on a line", "a = 1 b = 2\n", []string{hintOwnLine}},
		{"a closing brace after an attribute", "a {\nb = 1 }\n", []string{hintOwnLine}},
		{"text after a value", "a = \"x\" 1\n", []string{hintOwnLine}},
		{"text after a block", "a { b = 1 } c\n", []string{hintBraceOwnLine}},
		{"a string broken by a newline", "a = \"x\ny\"\n", []string{hintHeredoc, hintCloseString}},
		{"no value", "a =\n", []string{hintLiteral}},
		{"a closing bracket for a value", "a = )\n", []string{hintLiteral}},
		{"an operator without operand", "a = 1 +\n", []string{hintLiteral}},
		{"an empty object value", "a = { b = }\n", []string{hintLiteral}},
		{"set twice", "a = 1\na = 2\n", []string{hintOnce}},
		{"list items without commas", "a = [1 2]\n", []string{hintListComma}},
		{"a one-line block left open", "a \"x\" { b = 1\n}\n", []string{hintOneLineBlock}},
		{"a block header without a body", "a \"x\" \"y\" z\n", []string{hintBlockHeader}},
		{"a key without =", "a = { b 1 }\n", []string{hintKeyValue}},
		{"a quoted attribute name", "\"a\" = 1\n", []string{hintBareName}},
		{"an address unquoted", "a = 10.1.0.1\n", []string{hintNumber}},
		{"a comma after an attribute", "a = 1,\n", []string{hintComma}},
		{"object items without separators", "a = { b = 1 c = 2 }\n", []string{hintObjectSeparator}},
		{"quoted object keys without separators", "a = {\"x\" = 1 \"y\" = 2}\n", []string{hintObjectSeparator}},
		{"an unknown escape", "a = \"\\q\"\n", []string{hintEscape}},
		{"a variable", "a = b\n", []string{hintVariables}},
		{"a function call", "a = f(1)\n", []string{hintFunctions}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadSources([]source{{name: "f.hcl", data: []byte(tt.src)}})
			var ds Diagnostics
			if !errors.As(err, &ds) {
				t.Fatalf("load %q: %v, want diagnostics", tt.src, err)
			}
			var got []string
			for _, d := range ds {
				got = append(got, d.Hint)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("hints %q\nwant %q\n(%v)", got, tt.want, ds)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("%s: hint %q, want %q", ds[i], got[i], tt.want[i])
				}
			}
		})
	}
}
