"""The live demo: seeded demo accounts (``seed``), the market simulator (``simulator``, around
the price process of ``prices``), 24 h of simulated candles at start (``history``) and play
money for new accounts (``funds``).

On with ``DEMO=1`` (the default of ``make run`` only); ``python manage.py simulate`` runs the
simulator against any deployment.
"""
