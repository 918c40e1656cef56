"""Radix tree over token ids: which llama.cpp sequence holds the KV for which prefix.

KV cells live in llama.cpp's unified cache and belong to sequence ids. A
"holder" is a sequence id whose cells cover a node's token range at the same
absolute positions. Every holder is inserted along a full path from the
root, so a node's holders always hold its ancestors too; that lets a lookup
copy a matched prefix from any holder of the deepest node it reaches.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class _Node:
    tokens: list[int]
    start: int  # absolute position of tokens[0]
    parent: _Node | None
    children: dict[int, _Node] = field(default_factory=dict)
    holders: set[int] = field(default_factory=set)

    @property
    def end(self) -> int:
        return self.start + len(self.tokens)


class PrefixCache:
    def __init__(self) -> None:
        self.root = _Node([], 0, None)
        self._held: dict[int, set[_Node]] = {}  # holder -> nodes it holds
        self.n_tokens = 0  # tokens stored in the tree = distinct cached KV cells

    def match(self, tokens: list[int]) -> tuple[int, int | None]:
        """Longest cached prefix of `tokens`: (length, a holder to copy it from)."""
        node, pos, holder = self.root, 0, None
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None or not child.holders:
                break
            n = _common(child.tokens, tokens, pos)
            holder = next(iter(child.holders))
            pos += n
            if n < len(child.tokens):
                break
            node = child
        return pos, holder

    def insert(self, tokens: list[int], holder: int) -> None:
        """Record that sequence `holder` has KV for `tokens` at positions 0..len-1."""
        node, pos = self.root, 0
        held = self._held.setdefault(holder, set())
        while pos < len(tokens):
            child = node.children.get(tokens[pos])
            if child is None:
                child = _Node(tokens[pos:], pos, node)
                node.children[tokens[pos]] = child
                self.n_tokens += len(child.tokens)
            else:
                n = _common(child.tokens, tokens, pos)
                if n < len(child.tokens):
                    child = self._split(child, n)
            child.holders.add(holder)
            held.add(child)
            pos = child.end
            node = child

    def remove(self, holder: int) -> None:
        """Forget a holder; nodes nobody holds any more are dropped."""
        for node in self._held.pop(holder, ()):
            node.holders.discard(holder)
            if not node.holders and node.parent is not None:
                siblings = node.parent.children
                if siblings.get(node.tokens[0]) is node:
                    del siblings[node.tokens[0]]
                    self.n_tokens -= len(node.tokens)
                    self._drop_subtree_count(node)

    def holds(self, holder: int) -> bool:
        return holder in self._held

    def _drop_subtree_count(self, node: _Node) -> None:
        # Children of an unheld node are unheld too (holders cover full paths),
        # but they may not have been visited yet; account for them once here.
        stack = list(node.children.values())
        node.children = {}
        while stack:
            n = stack.pop()
            self.n_tokens -= len(n.tokens)
            stack.extend(n.children.values())
            n.children = {}

    def _split(self, child: _Node, n: int) -> _Node:
        """Cut `child` after n tokens; returns the new upper part."""
        parent = child.parent
        assert parent is not None
        upper = _Node(child.tokens[:n], child.start, parent, holders=set(child.holders))
        parent.children[upper.tokens[0]] = upper
        child.tokens = child.tokens[n:]
        child.start += n
        child.parent = upper
        upper.children[child.tokens[0]] = child
        for h in upper.holders:
            self._held[h].add(upper)
        return upper


def _common(edge: list[int], tokens: list[int], pos: int) -> int:
    n = min(len(edge), len(tokens) - pos)
    i = 0
    while i < n and edge[i] == tokens[pos + i]:
        i += 1
    return i
