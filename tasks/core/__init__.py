"""core: what every package shares and nothing else: atomic writes and output locks (`io`), file
hashes (`hashing`), content sniffing for clear errors (`sniff`), seeds (`seeds`), label maps (`labels`)
and where parallel data work runs (`parallel`: processes or Dask). Imports no other tasks package.
"""
