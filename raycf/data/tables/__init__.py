"""Fact tables written for raycf (Apache-2.0, see raycf/data/LICENSE.md): plain Python constants.

Every shipped set (raycf/data/sets/) and the pretraining corpus of raycf-tiny are generated from these
tables by raycf.data.build and raycf.data.corpus. Content is toy, neutral and hand-written; facts are
common-knowledge facts (capitals, chemical symbols, ...), everything else is invented.
"""
