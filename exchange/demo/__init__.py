"""The live demo: seeded demo accounts (``seed``) and the market simulator (``simulator``).

On with ``DEMO=1`` (the default of ``make run`` only); ``python manage.py simulate`` runs the
simulator against any deployment.
"""
