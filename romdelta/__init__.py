"""Deltas between ROM images: made on the signing side, applied on the device.

Imports nothing of ours (the signing side and the agent both import it); needs only the
standard library and HDiffPatch (PyPI `hdiffpatch`, the C++ library's binding). The format
is in `romdelta.format`, making a patch in `romdelta.make`, applying one as a stream in
`romdelta.apply`.
"""
