"""edgeplane-traffic: signal control at an intersection on the edge.

The ``sumo`` connector (:mod:`.connector`), the ``traffic-signal`` solution (:mod:`.solution`) with
its controllers, safety shield and fallback (:mod:`.control`, :mod:`.shield`), the policy's
observation (:mod:`.observation`), and ``edgeplane traffic train|evaluate|demo`` (:mod:`.cli`).
"""
