"""autoresearch-swarm: a Ray swarm of research agents sharing one best branch.

Subpackages and modules (each says what it covers in its own docstring):
records (the frozen data the parts exchange), task (what is optimised), proc (the one subprocess
helper), summary (the trainer's output contract), errors, agents/ (proposal makers), and the
coordinator, worker, journal and git parts of the loop.
"""

__version__ = "0.1.0"
