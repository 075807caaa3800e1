"""What tests/, tools/ and benchmarks/ share: image builders, configuration.

Not installed with qimgintrospect. tools/ and benchmarks/ import from here,
never from tests/, so the test suite can change shape without breaking them.

* :mod:`.config`: the one builder of the configuration tests, tools and
  benchmarks run with;
* :mod:`.imagebuilder`, :mod:`.guestimages`, :mod:`.hostileimages`: images
  made here, with qemu-img, guestfish or by hand, never downloaded;
* :mod:`.fuzzer`: header mutations of valid images, and their outcomes;
* :mod:`.webserver`: a real nginx that honours ``Range``, and a real HTTP
  server that lies about ranges, for the remote (ranged) reads;
  :mod:`.nbdclient`: what is read through an NBD export, to compare.
"""
